"""Custom op vs twin dispatch: XLA contexts pick the twin; the export switch keeps kdet ops out."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kdet.ops as ops
from kdet.custom_ops import build
from kdet.errors import KdetError
from kdet.ops import _dispatch

KDET_OP_TYPES = {"KdetRoiAlign", "KdetRoiAlignGrad"}


@pytest.fixture(autouse=True)
def library_and_reset():
    if build.find_cxx() is None:
        pytest.skip("no C++ compiler: the custom op cannot be built on this machine")
    assert build.load_library() is not None, build.info()["reason"]
    yield
    ops.set_implementation("auto")


def op_types(concrete_fn):
    """Op types in a concrete function's graph and every function in its library."""
    gdef = concrete_fn.graph.as_graph_def()
    types = {n.op for n in gdef.node}
    for fn in gdef.library.function:
        types |= {n.op for n in fn.node_def}
    return types


def test_select_eager_graph_and_xla():
    assert _dispatch.select(None, op="kdet_roi_align") == "custom"
    seen = {}

    def probe(x):
        seen["impl"] = _dispatch.select(None, op="kdet_roi_align")
        return x

    tf.function(probe)(tf.constant(1.0))
    assert seen["impl"] == "custom"
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen["impl"] == "tf"
    # a plain tf.function nested inside an XLA-compiled one is XLA too
    tf.function(lambda x: tf.function(probe)(x), jit_compile=True)(tf.constant(1.0))
    assert seen["impl"] == "tf"


def test_explicit_custom_under_xla_is_a_clear_error():
    fn = tf.function(lambda f, r: ops.roi_align(f, r, 2, implementation="custom"),
                     jit_compile=True)
    with pytest.raises(KdetError, match="inside an XLA-compiled function"):
        fn(tf.zeros([1, 4, 4, 1]), tf.constant([[0, 0, 0, 2, 2]], tf.float32))


def test_global_setting_and_context_manager():
    assert ops.get_implementation() == "auto"
    with ops.use_implementation("tf"):
        assert _dispatch.select(None) == "tf"
        assert _dispatch.select("custom", op="kdet_roi_align") == "custom"  # argument wins
    assert ops.get_implementation() == "auto"
    ops.set_implementation("tf")
    assert _dispatch.select(None) == "tf"
    with pytest.raises(KdetError, match="implementation must be one of"):
        ops.set_implementation("xla")


def test_export_switch_keeps_kdet_ops_out_of_the_graph():
    spec = [tf.TensorSpec([1, 8, 8, 2]), tf.TensorSpec([None, 5])]

    def forward(f, r):
        return ops.roi_align(f, r, 2, 0.5)

    default = tf.function(forward).get_concrete_function(*spec)
    assert "KdetRoiAlign" in op_types(default)  # the check below can fail
    with ops.use_implementation("tf"):
        exported = tf.function(forward).get_concrete_function(*spec)
    assert not op_types(exported) & KDET_OP_TYPES


def test_export_switch_saved_model_has_no_kdet_op(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda f, r: ops.roi_align(f, r, 3, 0.25),
                           input_signature=[tf.TensorSpec([1, 8, 8, 2]), tf.TensorSpec([None, 5])])
    with ops.use_implementation("tf"):
        tf.saved_model.save(module, str(tmp_path))
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((tmp_path / "saved_model.pb").read_bytes())
    graph = sm.meta_graphs[0].graph_def
    types = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "IdentityN" in types or "GatherV2" in types  # it did save the computation
    assert not types & KDET_OP_TYPES


class RoiAlignProbeModel(keras.Model):
    """Tiny model: features -> RoIAlign over fixed RoIs -> dense; records the dispatch."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.head = keras.layers.Dense(1)
        self.choices = []

    def call(self, x):
        f = self.conv(x)
        b = tf.shape(f)[0]
        rois = tf.concat([tf.cast(tf.range(b), tf.float32)[:, None],
                          tf.tile([[2.0, 2.0, 12.0, 14.0]], [b, 1])], axis=1)
        self.choices.append(_dispatch.select(None, op="kdet_roi_align"))
        pooled = ops.roi_align(f, rois, 2, 1.0)
        return self.head(tf.reshape(pooled, [b, 16]))


@pytest.mark.parametrize("jit_compile", [True, False])
def test_keras_fit_picks_twin_under_jit_compile(jit_compile):
    model = RoiAlignProbeModel()
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    y = np.zeros((4, 1), np.float32)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.choices and set(model.choices) == ({"tf"} if jit_compile else {"custom"})
