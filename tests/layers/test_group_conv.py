"""GroupConv2D equals keras Conv2D (outputs and gradients) on the grouped path."""
import numpy as np
import pytest
import tensorflow as tf

import keras

from kdet.layers.group_conv import GroupConv2D


@pytest.mark.parametrize("kw", [dict(strides=1), dict(strides=2), dict(dilation_rate=2),
                                dict(groups=1)])
def test_same_as_conv2d(kw):
    kw = dict(dict(groups=4), **kw)
    x = tf.random.normal([2, 9, 11, 12], seed=1)
    ref = keras.layers.Conv2D(8, 3, **kw)
    ref.build(x.shape)
    layer = GroupConv2D(8, 3, **kw)
    layer.build(x.shape)
    layer.set_weights(ref.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = ref(x), layer(x)
        la, lb = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    ga = tape.gradient(la, [x, ref.kernel])
    gb = tape.gradient(lb, [x, layer.kernel])
    for u, v in zip(ga, gb):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-4, atol=1e-4)
    assert GroupConv2D.from_config(layer.get_config()).groups == kw["groups"]
