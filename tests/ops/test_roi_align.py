"""RoIAlign: the C++ op and the pure-TF twin against a numpy transcription of mmcv's kernel."""
import numpy as np
import pytest
import tensorflow as tf

import kdet.ops as ops
from kdet.custom_ops import build
from kdet.errors import KdetError
from tests.ops.roi_align_reference import roi_align_ref

IMPLS = ["custom", "tf"]


@pytest.fixture(scope="module", autouse=True)
def op_library():
    """The op library must build here (g++ is present); without a compiler, skip 'custom'."""
    if build.find_cxx() is None:
        pytest.skip("no C++ compiler: the custom op cannot be built on this machine")
    lib = build.load_library()
    assert lib is not None, build.info()["reason"]
    return lib


def random_rois(rng, k, batch, img_h, img_w):
    """Boxes of every kind: inside, partly and wholly outside, tiny (< 1 px) and huge."""
    kinds = rng.integers(0, 4, k)
    x1 = rng.uniform(-0.2 * img_w, img_w, k)
    y1 = rng.uniform(-0.2 * img_h, img_h, k)
    w = np.where(kinds == 0, rng.uniform(0.05, 0.9, k),                  # tiny
        np.where(kinds == 1, rng.uniform(1.5 * img_w, 3 * img_w, k),     # huge
                 rng.uniform(1, img_w / 2, k)))
    h = np.where(kinds == 0, rng.uniform(0.05, 0.9, k),
        np.where(kinds == 1, rng.uniform(1.5 * img_h, 3 * img_h, k), rng.uniform(1, img_h / 2, k)))
    x1 = np.where(kinds == 3, img_w + rng.uniform(2, 40, k), x1)  # wholly outside (right)
    rois = np.stack([rng.integers(0, batch, k), x1, y1, x1 + w, y1 + h], 1)
    return rois.astype(np.float32)


CASES = [(aligned, sr, scale) for aligned in (True, False) for sr in (0, 2)
         for scale in (1.0, 1 / 4, 1 / 32)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("aligned,sampling_ratio,scale", CASES)
def test_forward_matches_reference(impl, aligned, sampling_ratio, scale):
    rng = np.random.default_rng(int(scale * 64) + 7 * sampling_ratio + aligned)
    b, h, w, c = 2, 9, 11, 3
    feats = rng.normal(size=(b, h, w, c)).astype(np.float32)
    rois = random_rois(rng, 8, b, h / scale, w / scale)
    want = roi_align_ref(feats, rois, (3, 2), scale, sampling_ratio, aligned)
    got = ops.roi_align(feats, rois, (3, 2), scale, sampling_ratio, aligned, implementation=impl)
    assert got.shape == (8, 3, 2, c) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    assert np.abs(want).max() > 0  # the case is not all zeros


@pytest.mark.parametrize("impl", IMPLS)
def test_aligned_convention_pinned(impl):
    """aligned=True: RoI (0,0,2,2) covers pixels 0 and 1; 2 samples/axis land on their
    centres, so the single bin is the plain mean of the 2x2 block. aligned=False samples at
    0.5 and 1.5 instead (half a pixel off)."""
    feats = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4 * row + col
    rois = np.array([[0, 0, 0, 2, 2]], np.float32)
    got = ops.roi_align(feats, rois, 1, 1.0, 2, True, implementation=impl).numpy()
    assert got[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    got = ops.roi_align(feats, rois, 1, 1.0, 2, False, implementation=impl).numpy()
    # samples (y, x) in {0.5, 1.5}^2: values 4y + x -> mean 4 * 1 + 1 = 5
    assert got[0, 0, 0, 0] == pytest.approx(5.0)
    # Adaptive grid: a 2-px RoI to 1 bin takes ceil(2 / 1) = 2 samples per axis, same result.
    got = ops.roi_align(feats, rois, 1, 1.0, 0, True, implementation=impl).numpy()
    assert got[0, 0, 0, 0] == pytest.approx(2.5)


def test_custom_op_equals_twin_forward_and_backward():
    rng = np.random.default_rng(0)
    feats = tf.constant(rng.normal(size=(2, 24, 20, 16)).astype(np.float32))
    rois = tf.constant(random_rois(rng, 40, 2, 96, 80))
    outs, grads = [], []
    for impl in IMPLS:
        with tf.GradientTape() as tape:
            tape.watch(feats)
            y = ops.roi_align(feats, rois, 7, 0.25, 0, True, implementation=impl)
            loss = tf.reduce_sum(y * tf.sin(tf.range(tf.size(y), dtype=tf.float32)
                                            ).__array__().reshape(y.shape))
        outs.append(y.numpy())
        grads.append(tape.gradient(loss, feats).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)
    assert np.abs(grads[0]).max() > 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 0), (False, 2)])
def test_features_gradient_numerically(impl, aligned, sampling_ratio):
    rng = np.random.default_rng(1)
    feats = tf.constant(rng.normal(size=(2, 6, 7, 2)).astype(np.float32))
    rois = tf.constant([[0, 1.2, 0.5, 20.1, 18.3], [1, -4, 3, 9, 30], [1, 5, 5, 5.6, 5.3]],
                       tf.float32)
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: ops.roi_align(x, rois, (2, 3), 0.25, sampling_ratio, aligned,
                                implementation=impl), [feats], delta=1e-2)
    assert np.abs(theoretical[0]).max() > 0
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_inputs_accepted(impl, dtype):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    rois = np.array([[0, 1, 1, 20, 25], [0, 10, 3, 30, 31]], np.float32)
    got = ops.roi_align(tf.cast(feats, dtype), tf.cast(rois, dtype), 2, 0.25,
                        implementation=impl)
    assert got.dtype == dtype
    want = roi_align_ref(tf.cast(tf.cast(feats, dtype), tf.float32).numpy(),
                         tf.cast(tf.cast(rois, dtype), tf.float32).numpy(), 2, 0.25)
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want, atol=0.05, rtol=0.02)


def test_twin_under_xla_forward_and_gradient():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(2, 10, 12, 3)).astype(np.float32)
    rois = random_rois(rng, 6, 2, 40, 48)

    @tf.function(jit_compile=True)
    def fn(x, r):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.roi_align(x, r, 3, 0.25, 0, True)  # "auto" -> the twin under XLA
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, x)

    y, g = fn(tf.constant(feats), tf.constant(rois))
    np.testing.assert_allclose(y.numpy(), roi_align_ref(feats, rois, 3, 0.25), rtol=1e-5,
                               atol=1e-5)
    x = tf.constant(feats)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(ops.roi_align(x, rois, 3, 0.25, implementation="custom") ** 2)
    np.testing.assert_allclose(g.numpy(), tape.gradient(loss, x).numpy(), rtol=1e-4, atol=1e-4)
    # Under XLA invalid rows cannot raise: they give zeros instead of garbage.
    bad = rois.copy()
    bad[0, 0] = 5
    bad[1, 2] = np.nan
    y, _ = fn(tf.constant(feats), tf.constant(bad))
    assert (y.numpy()[:2] == 0).all() and np.isfinite(y.numpy()).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_rois(impl):
    feats = tf.random.normal([2, 5, 5, 3])
    rois = tf.zeros([0, 5])
    out = ops.roi_align(feats, rois, (7, 6), implementation=impl)
    assert out.shape == (0, 7, 6, 3)
    with tf.GradientTape() as tape:
        tape.watch(feats)
        loss = tf.reduce_sum(ops.roi_align(feats, rois, 7, implementation=impl))
    np.testing.assert_array_equal(tape.gradient(loss, feats).numpy(), 0)
    out = tf.function(lambda f, r: ops.roi_align(f, r, 7), jit_compile=True)(feats, rois)
    assert out.shape == (0, 7, 7, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_rois_raise_invalid_argument(impl):
    feats = tf.random.normal([2, 5, 5, 3])
    good = [[0, 1, 1, 3, 3]]
    for rois, match in [([[0, np.nan, 1, 3, 3]], "non-finite"),
                        ([[2, 1, 1, 3, 3]], "batch index"),
                        ([[-1, 1, 1, 3, 3]], "batch index"),
                        ([[0.5, 1, 1, 3, 3]], "batch index")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            ops.roi_align(feats, np.array(good + rois, np.float32), 2, implementation=impl)
    # rois of the wrong width, only known at run time
    fn = tf.function(lambda f, r: ops.roi_align(f, r, 2, implementation=impl),
                     input_signature=[tf.TensorSpec([2, 5, 5, 3]), tf.TensorSpec([None, None])])
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(feats, tf.zeros([3, 4]))


def test_bad_arguments_raise_kdet_error():
    feats = tf.zeros([1, 4, 4, 2])
    rois = tf.zeros([1, 5])
    with pytest.raises(KdetError, match=r"rois must have shape \[K, 5\]"):
        ops.roi_align(feats, tf.zeros([3, 4]), 2)
    with pytest.raises(KdetError, match="features must be 4-D"):
        ops.roi_align(tf.zeros([4, 4, 2]), rois, 2)
    with pytest.raises(KdetError, match="rois must be a floating tensor"):
        ops.roi_align(feats, tf.zeros([1, 5], tf.int32), 2)
    with pytest.raises(KdetError, match="features must be a floating tensor"):
        ops.roi_align(tf.zeros([1, 4, 4, 2], tf.int32), rois, 2)
    with pytest.raises(KdetError, match="output_size"):
        ops.roi_align(feats, rois, 0)
    with pytest.raises(KdetError, match="sampling_ratio"):
        ops.roi_align(feats, rois, 2, sampling_ratio=-1)
    with pytest.raises(KdetError, match="spatial_scale"):
        ops.roi_align(feats, rois, 2, spatial_scale=0.0)
    with pytest.raises(KdetError, match="implementation must be one of"):
        ops.roi_align(feats, rois, 2, implementation="cuda")


def test_raw_op_rejects_mismatched_dtypes(op_library):
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError)):
        op_library.kdet_roi_align(tf.zeros([1, 4, 4, 2]), tf.zeros([1, 5], tf.float64),
                                  pooled_height=2, pooled_width=2, spatial_scale=1.0,
                                  sampling_ratio=0, aligned=True)
