"""MaskRCNN: mask loss in the progress bar, padded masks in predictions, save round trip,
MirroredStrategy training (two logical CPUs, in a subprocess), bad input."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from kdet.errors import KdetError
from kdet.models import MaskRCNN
from tests.conftest import REPO
from tests.models.two_stage_common import batch, dataset, small_kwargs


@pytest.fixture(scope="module")
def model():
    return MaskRCNN(**small_kwargs())


def test_mask_defaults():
    from kdet.models.mask_rcnn import MASK_RCNN_TRAIN_CFG
    assert MASK_RCNN_TRAIN_CFG["rcnn"]["assigner"]["match_low_quality"]


def test_losses_and_gradients(model):
    """The mask loss is named and every trainable weight gets a gradient (the fit / progress
    bar path is covered by test_faster_rcnn and, for Mask R-CNN, the learning test)."""
    import tensorflow as tf
    images, gt = batch(2, with_masks=True)
    with tf.GradientTape() as tape:
        losses = model.compute_losses(images, gt)
        total = tf.add_n(list(losses.values()))
    assert set(losses) == {"rpn_cls", "rpn_bbox", "cls", "bbox", "mask"}
    assert float(losses["mask"]) > 0 and all(np.isfinite(float(v)) for v in losses.values())
    assert model.loss_names == ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask")
    grads = tape.gradient(total, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, missing


def test_predict_masks(model):
    images, _ = batch(2)
    out = model.predict(images, verbose=0)
    assert out["masks"].shape == (2, 20, 28, 28)
    assert out["masks"].min() >= 0 and out["masks"].max() <= 1
    for i in range(2):
        n = out["num_detections"][i]
        assert (out["masks"][i, n:] == 0).all()


def test_empty_ground_truth(model):
    images, gt = batch(2, with_masks=True, empty=True)
    losses = model.compute_losses(images, gt)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["mask"]) == 0.0 and float(losses["bbox"]) == 0.0


def test_missing_masks_is_a_clear_error(model):
    images, gt = batch(1)
    with pytest.raises(KdetError, match="masks"):
        model.compute_losses(images, gt)


def test_save_load_round_trip(model, tmp_path):
    images, _ = batch(1)
    path = str(tmp_path / "mrcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    a, b = model(images), loaded(images)
    for key in ("boxes", "scores", "masks"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-5)
    assert loaded.get_config() == model.get_config()


_MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import kdet
    from kdet.models import MaskRCNN
    from tests.models.two_stage_common import dataset, small_kwargs
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = MaskRCNN(**small_kwargs())
        model.compile(optimizer=kdet.training.sgd(0.01))
    before = [v.numpy().copy() for v in model.trainable_variables]
    hist = model.fit(dataset(b=4, with_masks=True), steps_per_epoch=2, epochs=1, verbose=0)
    h = hist.history
    assert all(np.isfinite(h[k][0]) for k in ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask")), h
    after = [v.numpy() for v in model.trainable_variables]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    assert changed > 0.9 * len(before), (changed, len(before))
    print("MIRRORED_OK", {k: round(v[0], 4) for k, v in h.items()})
""")


@pytest.mark.slow  # a fresh process traces the replicated step: minutes on 2 CPU cores
def test_mirrored_strategy_two_logical_cpus():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "MIRRORED_OK" in proc.stdout, proc.stderr[-3000:]
