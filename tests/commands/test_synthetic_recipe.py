"""``kdet.commands.synthetic_recipe.train`` (the demo's training): dataset (re)generation and
the returned record, on a one-step run of a tiny Mask R-CNN."""
import json

from kdet.commands import synthetic_recipe as recipe
from kdet.data import make_shapes_dataset, shapes_paths


def _count(paths):
    return sum(len(json.load(open(paths[k]))["images"]) for k in ("train_ann", "val_ann"))


def test_train_regenerates_a_dataset_of_another_size(tmp_path, capsys):
    data = tmp_path / "shapes"
    make_shapes_dataset(data, num_images=6, image_size=64, seed=0)   # e.g. an older demo's
    model = recipe.synthetic_model(channels=16, fc_channels=32, rcnn_samples=16,
                                   train_proposals=50, test_proposals=50)
    result = recipe.train(data, epochs=1, num_images=10, batch_size=2, steps_per_epoch=1,
                          model=model, verbose=1)
    assert "holds 6 images, the recipe uses 10: regenerating" in capsys.readouterr().out
    assert _count(shapes_paths(data)) == 10
    assert result["steps"] == 1 and len(result["history"]["loss"]) == 1
    assert {"bbox_mAP", "segm_mAP"} <= set(result["metrics"])
