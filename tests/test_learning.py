"""Learning end to end: Mask R-CNN (RegNetX-400MF, random init) on the synthetic dataset.

Default (short, ~3 min on 2 cores): 300 steps of 8 images at 128x128; the total loss falls and
held-out bbox AP@0.5 rises above a floor and to 3x the untrained model's chance score.
Slow (``pytest -m slow tests/test_learning.py``, ~17 min): the full recipe of
``kdet.commands.synthetic_recipe`` at 256x256; asserts the issue's AP >= 0.5 targets within
20 minutes of training.
"""
import numpy as np
import pytest

from kdet.commands import synthetic_recipe as recipe

STEPS_DATA = 96     # images (72 train, 24 val) at 128x128
STEPS = 300         # training steps of 8 images
AP50_FLOOR = 0.02   # held-out bbox AP@0.5 the short run must beat (and 3x the untrained score)


def test_short_run_loss_falls_and_ap_rises(tmp_path):
    import keras

    from kdet.data import make_shapes_dataset
    from kdet.evaluation import COCOEvaluator
    from kdet.training import StepWarmupSchedule

    data = tmp_path / "shapes"
    make_shapes_dataset(data, num_images=STEPS_DATA, image_size=128, seed=1, val_fraction=0.25)
    keras.utils.set_random_seed(0)
    model = recipe.synthetic_model(channels=32, fc_channels=128, rcnn_samples=32,
                                   train_proposals=100, test_proposals=100)
    train_ds, val_ds, paths = recipe.datasets(data, batch_size=8, image_size=128)

    def ap50():
        ev = COCOEvaluator(paths["val_ann"], iou_types=("bbox",), verbose=False)
        for images, gt in val_ds:
            ev.update(model.predict_on_batch(images), gt)
        return ev.evaluate()["bbox_mAP_50"]

    model.compile(optimizer=keras.optimizers.AdamW(
        StepWarmupSchedule(2e-3, steps_per_epoch=1, milestones=(), warmup_iters=10,
                           warmup_ratio=0.01), weight_decay=1e-4,
        global_clipnorm=10.0))
    before = ap50()
    hist = model.fit(train_ds.repeat(), epochs=STEPS // 10, steps_per_epoch=10, verbose=0).history
    after = ap50()
    loss = hist["loss"]
    assert all(np.isfinite(loss)), loss
    print("loss", loss, "ap50", before, after)
    assert loss[-1] < 0.7 * loss[0], loss
    # The untrained model scores 0.005-0.02 by chance (random boxes of 3 classes on a few big
    # shapes). Measured on 2026-11-22: 0.005 -> 0.085 in one run and 0.005 -> 0.039 in a CI
    # run (multi-threaded CPU kernels are not bit-reproducible), loss 2.86 -> 1.37, 2.6 min.
    assert after > max(AP50_FLOOR, 3 * before), (before, after)


@pytest.mark.slow
def test_full_recipe_reaches_ap_targets(tmp_path):
    result = recipe.train(tmp_path / "shapes", verbose=2)
    m = result["metrics"]
    print("bbox_mAP", m["bbox_mAP"], "segm_mAP", m["segm_mAP"], "seconds",
          result["train_seconds"])
    assert m["bbox_mAP"] >= 0.5 and m["segm_mAP"] >= 0.5, m
    assert result["train_seconds"] <= 20 * 60, result["train_seconds"]
