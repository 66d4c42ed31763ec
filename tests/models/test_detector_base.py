"""The Detector base: fit/evaluate/predict contract with a toy detector, errors."""
import numpy as np
import pytest
import tensorflow as tf

import keras

from kdet.errors import KdetError
from kdet.models.base import Detector, check_ground_truth, default_preprocessing


class ToyDetector(Detector):
    """Predicts one box per image: mean of a learned vector; loss = L1 to the first gt box."""

    loss_names = ("bbox",)

    def __init__(self, **kwargs):
        super().__init__(num_classes=2, **kwargs)
        self.box = self.add_weight(shape=(4,), initializer="zeros", name="box")

    def call(self, images, training=False):
        b = tf.shape(images)[0]
        boxes = tf.tile(self.box[None, None], [b, 1, 1])
        return {"boxes": boxes, "scores": tf.ones([b, 1]), "labels": tf.zeros([b, 1], tf.int32),
                "num_detections": tf.ones([b], tf.int32)}

    def compute_losses(self, images, gt, training=True):
        gt = check_ground_truth(gt)
        pred = self(images)["boxes"][:, 0]
        return {"bbox": tf.reduce_mean(tf.abs(pred - gt["boxes"][:, 0]))}


def _data(n=8):
    images = np.zeros((n, 16, 16, 3), "float32")
    boxes = np.tile(np.array([[[1.0, 2.0, 3.0, 4.0]]], "float32"), (n, 2, 1))
    labels = np.array([[0, -1]] * n, "int32")
    ignore = np.zeros((n, 2), bool)  # a boolean gt key, as kdet.data yields
    gt = {"boxes": boxes, "labels": labels, "ignore": ignore}
    return tf.data.Dataset.from_tensor_slices((images, gt)).batch(4)


@pytest.mark.parametrize("jit", [False, True])
def test_fit_reports_named_losses_and_learns(jit):
    model = ToyDetector()
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit)
    hist = model.fit(_data(), epochs=5, verbose=0)
    assert set(hist.history) == {"loss", "bbox"}
    assert hist.history["bbox"][-1] < hist.history["bbox"][0]
    out = model.predict(np.zeros((3, 16, 16, 3), "float32"), verbose=0)
    assert out["boxes"].shape == (3, 1, 4)
    assert model.evaluate(_data(), verbose=0, return_dict=True)["bbox"] >= 0


def test_ground_truth_errors():
    with pytest.raises(KdetError, match="missing 'labels'"):
        check_ground_truth({"boxes": tf.zeros([1, 2, 4])})
    with pytest.raises(KdetError, match=r"\[B, N, 4\]"):
        check_ground_truth({"boxes": tf.zeros([1, 4]), "labels": tf.zeros([1, 2], tf.int32)})
    with pytest.raises(KdetError, match="masks"):
        check_ground_truth({"boxes": tf.zeros([1, 2, 4]), "labels": tf.zeros([1, 2])},
                           with_masks=True)
    with pytest.raises(KdetError, match="style"):
        default_preprocessing("tf")


def test_fit_under_mirrored_strategy_matches_single_device():
    """Two logical CPUs (own process): same weights as one device on the same global batch."""
    import json
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(repo / "tests/models/_mirrored_toy.py"), str(repo)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["mirrored"][0], out["single"][0], atol=1e-6)
    np.testing.assert_allclose(out["mirrored"][1], out["single"][1], atol=1e-6)
