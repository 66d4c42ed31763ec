"""FasterRCNN: losses in the progress bar, padded predictions, config / save round trips,
XLA-compiled training, bad input."""
import numpy as np
import pytest
import tensorflow as tf

import keras

import kdet
from kdet.errors import KdetError
from kdet.models import FasterRCNN
from tests.models.two_stage_common import IMG, batch, dataset, small_kwargs


@pytest.fixture(scope="module")
def model():
    return FasterRCNN(**small_kwargs())


def test_defaults_follow_mmdet():
    m = FasterRCNN.__init__.__defaults__
    assert m[0] == "regnetx_3.2gf" and m[1] == 80
    from kdet.models.two_stage import DEFAULT_BACKBONE_KWARGS, DEFAULT_TEST_CFG, DEFAULT_TRAIN_CFG
    assert DEFAULT_BACKBONE_KWARGS["frozen_stages"] == 1 and DEFAULT_BACKBONE_KWARGS["norm_eval"]
    assert DEFAULT_TRAIN_CFG["rpn_proposal"]["nms_pre"] == 2000
    assert DEFAULT_TRAIN_CFG["rcnn"]["sampler"]["num"] == 512
    assert not DEFAULT_TRAIN_CFG["rcnn"]["assigner"]["match_low_quality"]
    assert DEFAULT_TEST_CFG["rcnn"]["max_per_img"] == 100


def test_fit_shows_named_losses(model):
    model.compile(optimizer=kdet.training.sgd(0.01, weight_decay=1e-4))
    hist = model.fit(dataset(), steps_per_epoch=2, epochs=1, verbose=0).history
    for name in ("loss", "rpn_cls", "rpn_bbox", "cls", "bbox"):
        assert name in hist and np.isfinite(hist[name][0]), name
    assert "mask" not in hist


def test_predict_returns_padded_dict(model):
    images, _ = batch(2)
    out = model.predict(images, verbose=0)
    assert out["boxes"].shape == (2, 20, 4) and out["scores"].shape == (2, 20)
    assert out["labels"].dtype == np.int32 and out["num_detections"].shape == (2,)
    for i in range(2):
        n = out["num_detections"][i]
        assert (out["labels"][i, :n] >= 0).all() and (out["labels"][i, n:] == -1).all()
        assert (out["boxes"][i, :n] >= 0).all() and (out["boxes"][i, :n] <= IMG).all()
    assert "masks" not in out


def test_empty_ground_truth_batch(model):
    images, gt = batch(2, empty=True)
    losses = model.compute_losses(images, gt)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["bbox"]) == 0.0 and float(losses["rpn_bbox"]) == 0.0


def test_config_round_trip(model):
    config = model.get_config()
    clone = FasterRCNN.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def test_save_load_round_trip(model, tmp_path):
    images, _ = batch(1)
    path = str(tmp_path / "frcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FasterRCNN)
    a, b = model(images), loaded(images)
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~2-8 min: XLA compiles the whole step on 2 CPU cores
def test_xla_train_step():
    """The whole train step compiles with XLA (pure-TF RoIAlign / NMS twins)."""
    m = FasterRCNN(**small_kwargs())
    m.compile(optimizer=kdet.training.sgd(0.01), jit_compile=True)
    hist = m.fit(dataset(), steps_per_epoch=1, epochs=1, verbose=0).history
    assert all(np.isfinite(hist[k][0]) for k in ("rpn_cls", "rpn_bbox", "cls", "bbox"))


def test_bad_input(model):
    with pytest.raises(KdetError, match="NHWC"):
        model(tf.zeros([2, IMG, IMG]))
    with pytest.raises(KdetError, match="labels"):
        model.compute_losses(tf.zeros([1, IMG, IMG, 3]), {"boxes": tf.zeros([1, 1, 4])})
    with pytest.raises(KdetError, match="unknown train_cfg"):
        FasterRCNN(**dict(small_kwargs(), train_cfg=dict(rpn_proposals={})))
    with pytest.raises(KdetError, match="backbone"):
        FasterRCNN(backbone="regnetx_9000mf")
