"""kdet.layers.DeformConv2D / ModulatedDeformConv2D: build, zero-init behaviour, mmcv's offset
and mask split, gradients into conv_offset, serialisation, bad arguments."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from kdet.errors import KdetError
from kdet.layers import DeformConv2D, ModulatedDeformConv2D
from kdet.ops import deform_conv2d


def _x(shape=(2, 9, 8, 8), seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def _plain_conv(layer, x):
    (ph, pw), s, d = layer.padding, layer.strides, layer.dilation
    xp = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    if layer.groups == 1:
        out = tf.nn.conv2d(xp, layer.kernel, strides=s, padding="VALID", dilations=d)
    else:  # grouped: one conv per group
        xs = tf.split(xp, layer.groups, axis=-1)
        ws = tf.split(layer.kernel, layer.groups, axis=-1)
        out = tf.concat([tf.nn.conv2d(a, b, strides=s, padding="VALID", dilations=d)
                         for a, b in zip(xs, ws)], -1)
    return out if layer.bias is None else out + layer.bias


@pytest.mark.parametrize("cls,scale", [(DeformConv2D, 1.0), (ModulatedDeformConv2D, 0.5)])
@pytest.mark.parametrize("kwargs", [dict(), dict(strides=2, groups=2, use_bias=True),
                                    dict(dilation=2, padding=2, deform_groups=2),
                                    dict(strides=2, dilation=2, padding=2)])
def test_zero_initialised_offsets_give_a_plain_convolution(cls, scale, kwargs):
    """mmcv zero-inits conv_offset: offsets 0 and, for v2, mask = sigmoid(0) = 0.5."""
    layer = cls(6, **kwargs)
    x = _x()
    y = layer(x)
    want = _plain_conv(layer, x)
    if layer.bias is not None:
        want = scale * (want - layer.bias) + layer.bias
    else:
        want = scale * want
    assert y.shape == want.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_weights_and_shapes():
    layer = ModulatedDeformConv2D(16, deform_groups=2, groups=2, use_bias=True)
    layer.build((None, None, None, 8))
    assert layer.kernel.shape == (3, 3, 4, 16)
    assert layer.bias.shape == (16,)
    assert isinstance(layer.conv_offset, keras.layers.Conv2D)
    assert layer.conv_offset.kernel.shape == (3, 3, 8, 3 * 2 * 9)
    assert layer.conv_offset.bias.shape == (54,)
    assert not np.any(layer.conv_offset.kernel.numpy())
    v1 = DeformConv2D(16, kernel_size=(1, 3), padding=(0, 1))
    v1.build((None, 5, 5, 8))
    assert v1.conv_offset.kernel.shape == (1, 3, 8, 2 * 3) and v1.bias is None
    # mmcv's init: U(-1/sqrt(n), 1/sqrt(n)), n = Cin/groups * kh * kw
    assert np.abs(layer.kernel.numpy()).max() <= 1 / np.sqrt(4 * 9)
    assert np.abs(layer.kernel.numpy()).max() > 0.5 / np.sqrt(4 * 9)


def test_modulated_split_follows_mmcv():
    """conv_offset output [o1, o2, m]: offset = concat(o1, o2), mask = sigmoid(m)."""
    layer = ModulatedDeformConv2D(4, deform_groups=1)
    x = _x((1, 6, 7, 4), seed=1)
    layer(x)
    rng = np.random.default_rng(2)
    layer.conv_offset.kernel.assign(rng.normal(scale=0.3, size=layer.conv_offset.kernel.shape))
    layer.conv_offset.bias.assign(rng.normal(size=layer.conv_offset.bias.shape))
    raw = layer.conv_offset(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))
    o1, o2, m = tf.split(raw, 3, axis=-1)
    want = deform_conv2d(x, tf.concat([o1, o2], -1), layer.kernel, mask=tf.sigmoid(m),
                         padding=1, implementation="tf")
    np.testing.assert_allclose(layer(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [DeformConv2D, ModulatedDeformConv2D])
def test_gradients_reach_the_offset_predictor(cls):
    layer = cls(4, use_bias=True)
    x = _x((1, 6, 6, 4), seed=3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    names = [v.path for v in layer.trainable_variables]
    assert len(grads) == 4, names
    for v, g in zip(layer.trainable_variables, grads):
        assert g is not None and np.abs(g.numpy()).max() > 0, v.path


@pytest.mark.parametrize("cls", [DeformConv2D, ModulatedDeformConv2D])
def test_get_config_round_trip_and_keras_file(cls, tmp_path):
    layer = cls(6, kernel_size=3, strides=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                deform_groups=2, use_bias=True, name="dcn")
    inputs = keras.Input((9, 10, 4))
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(4)
    for v in model.weights:  # non-trivial offsets and masks
        v.assign(rng.normal(scale=0.2, size=v.shape))
    x = _x((2, 9, 10, 4), seed=5)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = tmp_path / "dcn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("dcn"), cls)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_runs_under_jit_compile_and_in_fit():
    layer = ModulatedDeformConv2D(4)
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    x, y = _x((4, 8, 8, 4), seed=6), _x((4, 8, 8, 4), seed=7)
    before = model.get_layer(layer.name).conv_offset.kernel.numpy().copy()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    after = model.get_layer(layer.name).conv_offset.kernel.numpy()
    assert np.abs(after - before).max() > 0


def test_mixed_precision_policy():
    layer = ModulatedDeformConv2D(4, dtype="mixed_float16")
    y = layer(tf.cast(_x((1, 6, 6, 4)), tf.float16))
    assert y.dtype == tf.float16 and layer.kernel.dtype == "float32"


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=6, groups=4), "filters \\(6\\) must be divisible by groups \\(4\\)"),
    (dict(filters=4, kernel_size=0), "kernel_size must be"),
    (dict(filters=4, padding=(1, 1, 1)), "padding must be"),
    (dict(filters=0), "filters must be a positive int"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(KdetError, match=message):
        ModulatedDeformConv2D(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(groups=3, filters=3), "input channels \\(8\\) must be divisible by groups \\(3\\)"),
    (dict(deform_groups=3), "input channels \\(8\\) must be divisible by deform_groups"),
])
def test_bad_input_channels(kwargs, message):
    layer = DeformConv2D(**{"filters": 6, **kwargs})
    with pytest.raises(KdetError, match=message):
        layer(_x())


def test_saved_model_traced_with_the_twin_has_no_kdet_op(tmp_path):
    """Exports trace inside use_implementation("tf"): TF Serving can load the graph without
    kdet's op library."""
    from kdet.ops import use_implementation
    layer = ModulatedDeformConv2D(4)
    x = _x((1, 6, 6, 4))
    want = layer(x)
    module = tf.Module()
    module.layer = layer
    module.serve = tf.function(layer.call, input_signature=[tf.TensorSpec([None, 6, 6, 4])])
    with use_implementation("tf"):
        tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    graph = loaded.serve.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert ops and not any(op.startswith("Kdet") for op in ops), sorted(ops)
    np.testing.assert_allclose(loaded.serve(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
