"""Subprocess body: ToyDetector fit under MirroredStrategy on 2 logical CPUs with bool gt."""
import json
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

sys.path.insert(0, sys.argv[1])
from tests.models.test_detector_base import ToyDetector, _data  # noqa: E402


def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = ToyDetector()
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    hist = model.fit(_data(), epochs=2, verbose=0)
    return model.box.numpy().tolist(), hist.history["loss"]


mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
single = run(tf.distribute.get_strategy())
print(json.dumps({"mirrored": mirrored, "single": single}))
