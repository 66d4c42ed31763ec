"""Learning end to end: Mask R-CNN (RegNetX-400MF, random init) on the synthetic dataset.

Default (short, ~2-4 min on 2 busy cores): a few dozen steps on 128x128 images; the total loss
falls and held-out bbox AP@0.5 rises above a floor.
Slow (``pytest -m slow tests/test_learning.py``, ~20-40 min): the full recipe of
``kdet.commands.synthetic_recipe`` at 256x256; asserts the issue's AP >= 0.5 targets.
"""
import numpy as np
import pytest

from kdet.commands import synthetic_recipe as recipe


def test_short_run_loss_falls_and_ap_rises(tmp_path):
    import keras

    from kdet.data import make_shapes_dataset
    from kdet.evaluation import COCOEvaluator

    data = tmp_path / "shapes"
    make_shapes_dataset(data, num_images=40, image_size=128, seed=1, val_fraction=0.25)
    keras.utils.set_random_seed(0)
    model = recipe.synthetic_model(channels=32, fc_channels=128, rcnn_samples=64,
                                   train_proposals=100, test_proposals=100)
    train_ds, val_ds, paths = recipe.datasets(data, batch_size=2, image_size=128)

    def ap50():
        ev = COCOEvaluator(paths["val_ann"], iou_types=("bbox",), verbose=False)
        for images, gt in val_ds:
            ev.update(model.predict_on_batch(images), gt)
        return ev.evaluate()["bbox_mAP_50"]

    model.compile(optimizer=keras.optimizers.AdamW(
        recipe._WarmupStep(2e-3, warmup=5, step_at=10 ** 6), weight_decay=1e-4,
        global_clipnorm=10.0))
    before = ap50()
    hist = model.fit(train_ds.repeat(), epochs=4, steps_per_epoch=10, verbose=0).history
    after = ap50()
    loss = hist["loss"]
    assert all(np.isfinite(loss)), loss
    print("loss", loss, "ap50", before, after)
    assert loss[-1] < 0.85 * loss[0], loss  # measured 2.60 -> 2.03 (epoch means)
    # 40 steps from random init barely start detection: measured AP@0.5 0.0014 -> 0.0016 on
    # 2026-11-22 (an earlier recipe: 0.003 -> 0.037). The floor is the untrained model's AP;
    # the AP >= 0.5 claim is the slow test's (not reached yet, docs/two_stage.md).
    assert after > before, (before, after)


@pytest.mark.slow
def test_full_recipe_reaches_ap_targets(tmp_path):
    result = recipe.train(tmp_path / "shapes", verbose=2)
    m = result["metrics"]
    print("bbox_mAP", m["bbox_mAP"], "segm_mAP", m["segm_mAP"], "seconds",
          result["train_seconds"])
    assert m["bbox_mAP"] >= 0.5 and m["segm_mAP"] >= 0.5, m
