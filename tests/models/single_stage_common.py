"""Shared checks of the single-stage detectors' public contract (tiny widths, 128 px)."""
import numpy as np
import tensorflow as tf

import keras

SIZE = 128


def tiny(cls, **kw):
    return cls(backbone="regnetx_400mf", num_classes=3, neck={"out_channels": 32},
               head={"feat_channels": 32, "stacked_convs": 1, **kw.pop("head", {})}, **kw)


def batch(n=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, SIZE, SIZE, 3)).astype(np.float32)
    boxes = np.zeros((n, 3, 4), np.float32)
    labels = -np.ones((n, 3), np.int32)
    boxes[0, :2] = [[20, 30, 70, 90], [60, 8, 124, 40]]
    labels[0, :2] = [0, 2]
    return images, {"boxes": boxes, "labels": labels}  # image 1 has no object


def check_predict_contract(model):
    images, _ = batch()
    out = model.predict(images, verbose=0)
    assert set(out) == {"boxes", "scores", "labels", "num_detections"}
    assert out["boxes"].shape == (2, 100, 4) and out["scores"].shape == (2, 100)
    assert out["labels"].dtype == np.int32 and out["num_detections"].shape == (2,)
    for b in range(2):
        n = out["num_detections"][b]
        assert (out["labels"][b, n:] == -1).all() and (out["scores"][b, n:] == 0).all()
        assert (out["labels"][b, :n] >= 0).all() and (out["labels"][b, :n] < 3).all()
        assert (out["boxes"][b] >= 0).all() and (out["boxes"][b] <= SIZE).all()
    # img_shape clips to the valid area
    small = model(tf.constant(images), img_shape=tf.constant([[64.0, 80.0], [128.0, 128.0]]))
    assert float(tf.reduce_max(small["boxes"][0, :, 2])) <= 80.0
    assert float(tf.reduce_max(small["boxes"][0, :, 3])) <= 64.0


def check_fit_xla(model, loss_names):
    images, gt = batch()
    ds = tf.data.Dataset.from_tensors((images, gt)).repeat(3)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    hist = model.fit(ds, epochs=1, verbose=0).history
    assert set(hist) == {"loss", *loss_names}
    assert all(np.isfinite(v[-1]) for v in hist.values())


def check_save_load(model, cls, tmp_path):
    images, _ = batch()
    ref = model.predict(images, verbose=0)
    clone = cls.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    out = loaded.predict(images, verbose=0)
    for key in ref:
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-4)
