"""Run by tests/models/test_retinanet.py in a subprocess: 2 logical CPUs.

For RetinaNet, ATSS and PAA: one SGD step under MirroredStrategy (one image per replica)
and one on a single device, from the same weights, on a batch of two identical images (so
MMDetection's per-GPU normalisation and the global one agree). Prints one json line
{model: {"diff": max |w_mirrored - w_single|, "moved": max |w - w0|, "loss": ...}}.
"""
import json
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdet.models as models  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 128, 128, 3)).astype(np.float32)
    images = np.concatenate([img, img])
    boxes = np.array([[[20, 30, 70, 90], [60, 8, 124, 40]]] * 2, np.float32)
    labels = np.array([[0, 2]] * 2, np.int32)
    return tf.data.Dataset.from_tensors((images, {"boxes": boxes, "labels": labels})).repeat()


def build(cls, init):
    model = cls(backbone="regnetx_400mf", num_classes=3, neck={"out_channels": 16},
                head={"feat_channels": 32, "stacked_convs": 1})
    model(tf.zeros((1, 128, 128, 3)))
    if init is not None:
        model.set_weights(init)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def step(strategy, cls, init):
    with strategy.scope():
        model = build(cls, init)
    init = [w.copy() for w in model.get_weights()] if init is None else init
    hist = model.fit(data(), steps_per_epoch=1, epochs=1, verbose=0)
    return model.get_weights(), init, float(hist.history["loss"][-1])


def main():
    keras.utils.set_random_seed(1)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices=devices)
    assert mirrored.num_replicas_in_sync == 2
    out = {}
    for cls in (models.RetinaNet, models.ATSS, models.PAA):
        single, init, loss_s = step(tf.distribute.get_strategy(), cls, None)
        mirror, _, loss_m = step(mirrored, cls, init)
        out[cls.__name__] = {
            "diff": max(float(np.abs(a - b).max()) for a, b in zip(single, mirror)),
            "moved": max(float(np.abs(a - b).max()) for a, b in zip(single, init)),
            "loss_single": loss_s, "loss_mirrored": loss_m}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
