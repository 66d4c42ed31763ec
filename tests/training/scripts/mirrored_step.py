"""Run by test_distribute.py in a subprocess: 2 logical CPUs, MirroredStrategy vs one device.

Prints one json line: max |w_mirrored - w_single| for the helper-normalised loss, and
for a naive per-replica normalisation (which must differ).
"""
import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kdet.training import normalize_by_positives, scale_replica_mean, sgd  # noqa: E402


class DenseDetector(keras.Model):
    """Per-pixel objectness + box offsets; losses normalised by the positive pixels."""

    def __init__(self, naive=False):
        super().__init__()
        self.naive = naive
        self.conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.cls = keras.layers.Conv2D(1, 1)
        self.reg = keras.layers.Conv2D(2, 1)

    def call(self, x):
        f = self.conv(x)
        return tf.concat([self.cls(f), self.reg(f)], axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        pos = tf.cast(y[..., 0] > 0.5, tf.float32)
        num_pos = tf.reduce_sum(pos)
        cls = tf.nn.sigmoid_cross_entropy_with_logits(labels=pos, logits=y_pred[..., 0])
        reg = tf.reduce_sum(tf.abs(y_pred[..., 1:] - y[..., 1:]), axis=-1) * pos
        loss_sum = tf.reduce_sum(cls) + tf.reduce_sum(reg)
        if self.naive:   # local normalisation (mmdet's AnchorHead): differs when counts do
            return scale_replica_mean(loss_sum / tf.maximum(num_pos, 1.0))
        # mmdet's reduce_mean(num_pos) normaliser, then DDP's average over replicas.
        return scale_replica_mean(normalize_by_positives(loss_sum, num_pos))


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 3)).astype(np.float32)
    y = np.zeros((8, 6, 6, 3), np.float32)
    # Very different positive counts in the two halves of the batch (2 vs 30 pixels).
    y[0, 1, 1, 0] = y[2, 3, 3, 0] = 1
    y[4:, 1:5, 1:5, 0] = rng.random((4, 4, 4)) > 0.1
    y[..., 1:] = rng.normal(size=(8, 6, 6, 2))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()


def train(strategy, naive, init):
    with strategy.scope():
        model = DenseDetector(naive)
        model(tf.zeros((1, 6, 6, 3)))
        if init is not None:
            model.set_weights(init)
        # Momentum, L2 decay and a clip norm small enough to be active: the clipping must
        # see the summed (global) gradient.
        model.compile(optimizer=sgd(0.05, weight_decay=1e-3, clip_global_norm=0.5))
    init = [w.copy() for w in model.get_weights()] if init is None else init
    model.fit(data(), steps_per_epoch=2, epochs=1, verbose=0)
    return model.get_weights(), init


def main():
    keras.utils.set_random_seed(1)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices=devices)
    assert mirrored.num_replicas_in_sync == 2
    out = {}
    for naive in (False, True):
        single, init = train(tf.distribute.get_strategy(), naive, None)
        multi, _ = train(mirrored, naive, init)
        moved = max(float(np.abs(a - b).max()) for a, b in zip(single, init))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(single, multi))
        out["naive" if naive else "helper"] = {"diff": diff, "moved": moved}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
