"""kdet.ops.deform_conv2d: numpy reference, custom op vs twin, gradients, XLA, bad input.

The numpy reference below re-implements mmcv's deformable_im2col rule independently
(torchvision is not installed here): a sampling point with y <= -1, y >= H, x <= -1 or
x >= W reads 0; otherwise the in-range corners of its cell contribute bilinearly.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops import deform_conv2d


def _custom_available():
    from kdet.custom_ops import build
    module = build.load_library()
    return module is not None and hasattr(module, "kdet_deform_conv2d")


custom = pytest.mark.skipif(not _custom_available(),
                            reason="kdet op library could not be built/loaded (see warning)")
IMPLS = [pytest.param("custom", marks=custom), "tf"]


# ----------------------------------------------------------------------------- reference

def _bilinear(img, y, x):
    """img [H, W, C]; mmcv's deformable_im2col_bilinear."""
    h, w, _ = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return np.zeros(img.shape[-1])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    out = np.zeros(img.shape[-1])
    for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                       (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < h and 0 <= xx < w:
            out += wt * img[yy, xx]
    return out


def reference(x, offset, weight, bias=None, mask=None, strides=1, padding=0, dilation=1,
              groups=1, deform_groups=1):
    """Loop-level numpy deformable convolution in float64 (NHWC, mmcv semantics)."""
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    kh, kw, cg, cout = weight.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    kp, cdg = kh * kw, c // deform_groups
    cols = np.zeros((b, ho, wo, kp, c))
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for g in range(deform_groups):
                    for k in range(kp):
                        y = i * sh - ph + (k // kw) * dh + offset[n, i, j, 2 * (g * kp + k)]
                        xx = j * sw - pw + (k % kw) * dw + offset[n, i, j, 2 * (g * kp + k) + 1]
                        v = _bilinear(x[n, :, :, g * cdg:(g + 1) * cdg], y, xx)
                        if mask is not None:
                            v = v * mask[n, i, j, g * kp + k]
                        cols[n, i, j, k, g * cdg:(g + 1) * cdg] = v
    out = np.zeros((b, ho, wo, cout))
    og = cout // groups
    wk = np.asarray(weight, np.float64).reshape(kp, cg, cout)
    for g in range(groups):
        out[..., g * og:(g + 1) * og] = np.einsum(
            "bijkc,kco->bijo", cols[..., g * cg:(g + 1) * cg], wk[:, :, g * og:(g + 1) * og])
    if bias is not None:
        out += bias
    return out


def _case(seed, b=2, h=7, w=6, cin=4, cout=4, k=(3, 3), strides=1, padding=1, dilation=1,
          groups=1, deform_groups=1, modulated=True, bias=True, offset_scale=2.5,
          dtype=np.float32):
    """Random inputs; offsets up to +-offset_scale px so that some samples leave the map."""
    rng = np.random.default_rng(seed)
    s = (strides, strides) if isinstance(strides, int) else strides
    p = (padding, padding) if isinstance(padding, int) else padding
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    kp = k[0] * k[1]
    args = dict(
        x=rng.normal(size=(b, h, w, cin)).astype(dtype),
        offset=rng.uniform(-offset_scale, offset_scale,
                           size=(b, ho, wo, 2 * deform_groups * kp)).astype(dtype),
        weight=rng.normal(size=(k[0], k[1], cin // groups, cout)).astype(dtype),
        bias=rng.normal(size=(cout,)).astype(dtype) if bias else None,
        mask=rng.uniform(0, 1, size=(b, ho, wo, deform_groups * kp)).astype(dtype)
        if modulated else None)
    attrs = dict(strides=strides, padding=padding, dilation=dilation, groups=groups,
                 deform_groups=deform_groups)
    return args, attrs


CASES = {
    "v2_basic": dict(),
    "v1_no_bias": dict(modulated=False, bias=False),
    "deform_groups2": dict(deform_groups=2, seed_off=1),
    "groups2": dict(groups=2, cout=6),
    "groups2_dg2": dict(groups=2, deform_groups=2, cin=8, cout=4),
    "dg4_groups2_mixed": dict(groups=2, deform_groups=4, cin=8, cout=2),
    "stride2": dict(strides=2, h=9, w=8),
    "dilation2": dict(dilation=2, padding=2, h=8, w=8),
    "no_padding": dict(padding=0, modulated=False),
    "asym_1x3_stride_pad": dict(k=(1, 3), strides=(2, 1), padding=(0, 1), dilation=(1, 2)),
    "far_offsets": dict(offset_scale=9.0),
}


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_numpy_reference(name, impl):
    spec = dict(CASES[name])
    seed = 100 + sorted(CASES).index(name)
    spec.pop("seed_off", None)
    args, attrs = _case(seed, **spec)
    want = reference(**args, **attrs)
    got = deform_conv2d(**args, **attrs, implementation=impl).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_reference_sees_samples_outside_the_map():
    """The random cases really do exercise out-of-range samples and partial cells."""
    args, attrs = _case(101)
    off = args["offset"].reshape(2, 7, 6, 9, 2)
    i = np.arange(7)[:, None, None] - 1 + np.repeat(np.arange(3), 3)[None, None, :]
    y = i[None] + off[..., 0]
    assert (y <= -1).any() and (y >= 7).any() and ((y > -1) & (y < 0)).any()


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_boundary_points(impl):
    """Points exactly at -1 and at H read 0; at H - 1 and at -0.5 they read in-range corners."""
    x = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4, 1)
    weight = np.ones((1, 1, 1, 1), np.float32)
    offset = np.zeros((1, 3, 4, 2), np.float32)
    # output pixel (0, 0): y = -1 -> 0; (0, 1): y = 3 = H -> 0; (1, 0): y = 1 + 1 = 2 = H-1
    offset[0, 0, 0] = (-1.0, 0.0)
    offset[0, 0, 1] = (3.0, 0.0)
    offset[0, 1, 0] = (1.0, 0.0)
    offset[0, 1, 1] = (-1.5, -0.5)  # y = -0.5, x = 0.5: only the row-0 corners, weight 0.5
    got = deform_conv2d(x, offset, weight, implementation=impl).numpy()
    want = reference(x, offset, weight)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0, 0, 0, 0] == 0 and got[0, 0, 1, 0] == 0
    np.testing.assert_allclose(got[0, 1, 0, 0], x[0, 2, 0, 0])
    np.testing.assert_allclose(got[0, 1, 1, 0], 0.5 * 0.5 * (1 + 2))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strides,padding,dilation,groups", [(1, 1, 1, 1), (2, 1, 1, 2),
                                                             (1, 2, 2, 1)])
def test_zero_offsets_equal_a_normal_convolution(impl, strides, padding, dilation, groups):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 9, 10, 4)).astype(np.float32)
    weight = rng.normal(size=(3, 3, 4 // groups, 6)).astype(np.float32)
    xp = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    want = tf.nn.conv2d(xp, weight, strides=strides, padding="VALID", dilations=dilation)
    ho, wo = want.shape[1:3]
    zeros = np.zeros((2, ho, wo, 18), np.float32)
    ones = np.ones((2, ho, wo, 9), np.float32)
    for mask in (None, ones):
        got = deform_conv2d(x, zeros, weight, mask=mask, strides=strides, padding=padding,
                            dilation=dilation, groups=groups, implementation=impl)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


@custom
@pytest.mark.parametrize("name", ["groups2_dg2", "stride2", "dilation2", "far_offsets"])
def test_custom_op_equals_twin(name):
    args, attrs = _case(300 + len(name), b=1, h=11, w=12, **{
        k: v for k, v in CASES[name].items() if k not in ("seed_off", "h", "w")})
    a = deform_conv2d(**args, **attrs, implementation="custom").numpy()
    b = deform_conv2d(**args, **attrs, implementation="tf").numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@custom
def test_custom_op_bigger_than_one_block():
    """More output pixels than one 256-row block and one backward chunk of the C++ kernel."""
    args, attrs = _case(5, b=2, h=48, w=40, cin=8, cout=8, deform_groups=2, groups=2)
    a = deform_conv2d(**args, **attrs, implementation="custom").numpy()
    b = deform_conv2d(**args, **attrs, implementation="tf").numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@custom
def test_custom_backward_over_several_chunks():
    """64x64 output pixels x (9 * 256) columns exceed one backward chunk of the C++ kernel
    (8M column elements = 3584 rows here), so the chunk loop and the split col2im run."""
    args, attrs = _case(6, b=1, h=64, w=64, cin=256, cout=4, deform_groups=2)
    grads = {}
    for impl in ("custom", "tf"):
        ts = {k: tf.constant(v) for k, v in args.items() if v is not None}
        with tf.GradientTape() as tape:
            tape.watch(list(ts.values()))
            loss = tf.reduce_sum(deform_conv2d(**ts, **attrs, implementation=impl) ** 2)
        grads[impl] = dict(zip(ts, tape.gradient(loss, list(ts.values()))))
    for k in grads["tf"]:
        want = grads["tf"][k].numpy()
        np.testing.assert_allclose(grads["custom"][k].numpy(), want,
                                   rtol=1e-3, atol=1e-3 * np.abs(want).max(), err_msg=k)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs(impl, dtype):
    args, attrs = _case(11, cin=8, cout=8, deform_groups=2)
    want = reference(**args, **attrs)
    targs = {k: None if v is None else tf.cast(v, dtype) for k, v in args.items()}
    got = deform_conv2d(**targs, **attrs, implementation=impl)
    assert got.dtype == dtype
    # inputs rounded to 8 (bf16) / 11 (f16) mantissa bits; accumulation in float32
    tol = 0.15 if dtype == tf.bfloat16 else 0.03
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl):
    args, attrs = _case(3, b=0)
    out = deform_conv2d(**args, **attrs, implementation=impl)
    assert out.shape == (0, 7, 6, 4)


# ----------------------------------------------------------------------------- gradients

def _grad_case(modulated, bias, **kw):
    # Offsets keep sample points away from integer grid lines, where the bilinear
    # interpolation has kinks and a finite difference would straddle two cells.
    args, attrs = _case(21, b=1, h=5, w=4, cin=4, cout=2, dtype=np.float64,
                        modulated=modulated, bias=bias, offset_scale=1.7, **kw)
    off = args["offset"]
    frac = off - np.floor(off)
    args["offset"] = np.floor(off) + np.clip(frac, 0.15, 0.85)
    return args, attrs


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("modulated", [True, False])
def test_gradients_numerically(impl, modulated):
    args, attrs = _grad_case(modulated, bias=True, deform_groups=2, groups=2, strides=(1, 2))
    names = [k for k in ("x", "offset", "weight", "bias", "mask") if args[k] is not None]

    @tf.function  # the numeric Jacobian calls f once per input element
    def f(*tensors):
        kw = dict(args, **dict(zip(names, tensors)))
        return deform_conv2d(**kw, **attrs, implementation=impl)

    theo, numer = tf.test.compute_gradient(f, [tf.constant(args[k]) for k in names], delta=1e-4)
    for name, t, n in zip(names, theo, numer):
        assert np.abs(t).max() > 0, name
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-5, err_msg=name)


@custom
@pytest.mark.parametrize("modulated", [True, False])
def test_custom_gradients_equal_twin_gradients(modulated):
    """Same gradients, including for samples outside the map (float32, bigger case)."""
    args, attrs = _case(31, b=2, h=9, w=7, cin=8, cout=6, groups=2, deform_groups=2,
                        strides=2, modulated=modulated, offset_scale=4.0)
    grads = {}
    for impl in ("custom", "tf"):
        ts = {k: tf.constant(v) for k, v in args.items() if v is not None}
        with tf.GradientTape() as tape:
            tape.watch(list(ts.values()))
            out = deform_conv2d(**ts, **attrs, implementation=impl)
            loss = tf.reduce_sum(out * tf.cos(out))
        grads[impl] = dict(zip(ts, tape.gradient(loss, list(ts.values()))))
    for k in grads["tf"]:
        np.testing.assert_allclose(grads["custom"][k], grads["tf"][k], rtol=1e-4, atol=1e-4,
                                   err_msg=k)


@custom
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_custom_gradients_half_precision(dtype):
    """Half-precision gradients match float32 gradients of the same (rounded) inputs."""
    args, attrs = _case(41, cin=8, cout=8, deform_groups=2)
    grads = {}
    for run_dtype in (dtype, tf.float32):
        ts = {k: tf.cast(tf.cast(v, dtype), run_dtype) for k, v in args.items()
              if v is not None}
        with tf.GradientTape() as tape:
            tape.watch(list(ts.values()))
            loss = tf.reduce_sum(deform_conv2d(**ts, **attrs, implementation="custom"))
        grads[run_dtype] = dict(zip(ts, tape.gradient(loss, list(ts.values()))))
    for k, v in grads[dtype].items():
        assert v.dtype == dtype
        ref = grads[tf.float32][k].numpy()
        scale = np.abs(ref).max()
        np.testing.assert_allclose(tf.cast(v, tf.float32).numpy() / scale, ref / scale,
                                   atol=0.02 if dtype == tf.bfloat16 else 2e-3, err_msg=k)


def _torch_deform_conv(torch, x, offset, weight, bias, mask, strides, padding, dilation,
                       groups, deform_groups):
    """Independent torch reference: F.grid_sample(align_corners=True, padding_mode="zeros")
    is exactly mmcv's sampling rule (corners outside the map read 0, so points at y <= -1 or
    y >= H read nothing), and torch autograd differentiates it. NHWC in, NHWC out."""
    F = torch.nn.functional
    b, h, w, c = x.shape
    kh, kw, cg, cout = weight.shape
    kp, cdg, og = kh * kw, c // deform_groups, cout // groups
    ho, wo = offset.shape[1:3]
    xn = x.permute(0, 3, 1, 2)
    base_y = (torch.arange(ho, dtype=x.dtype) * strides - padding)[:, None]
    base_x = (torch.arange(wo, dtype=x.dtype) * strides - padding)[None, :]
    cols = []
    for k in range(kp):
        per_group = []
        for g in range(deform_groups):
            ch = 2 * (g * kp + k)
            y = base_y + (k // kw) * dilation + offset[..., ch]
            xx = base_x + (k % kw) * dilation + offset[..., ch + 1]
            grid = torch.stack([2 * xx / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)
            v = F.grid_sample(xn[:, g * cdg:(g + 1) * cdg], grid, mode="bilinear",
                              padding_mode="zeros", align_corners=True)
            if mask is not None:
                v = v * mask[..., g * kp + k][:, None]
            per_group.append(v)
        cols.append(torch.cat(per_group, dim=1).permute(0, 2, 3, 1))  # [B, Ho, Wo, C]
    cols = torch.stack(cols, dim=3)  # [B, Ho, Wo, K, C]
    wk = weight.reshape(kp, cg, cout)
    out = torch.cat([torch.einsum("bijkc,kco->bijo", cols[..., g * cg:(g + 1) * cg],
                                  wk[:, :, g * og:(g + 1) * og]) for g in range(groups)], -1)
    return out + bias


@pytest.mark.torch
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("modulated", [True, False])
def test_gradients_match_torch_autograd(impl, modulated):
    """Gradients of every input against torch autograd through grid_sample (float64)."""
    torch = pytest.importorskip("torch", reason="torch (test-only reference) not installed")
    attrs = dict(strides=2, padding=1, dilation=2, groups=2, deform_groups=2)
    args, _ = _case(71, b=2, h=9, w=8, cin=4, cout=6, dtype=np.float64, modulated=modulated,
                    offset_scale=3.0, **attrs)
    names = [k for k in ("x", "offset", "weight", "bias", "mask") if args[k] is not None]
    upstream = np.random.default_rng(72).normal(
        size=reference(**args, **attrs).shape)
    tt = {k: torch.tensor(args[k], requires_grad=True) for k in names}
    out_t = _torch_deform_conv(torch, tt["x"], tt["offset"], tt["weight"], tt["bias"],
                               tt.get("mask"), **attrs)
    (out_t * torch.from_numpy(upstream)).sum().backward()
    ts = {k: tf.constant(args[k]) for k in names}
    with tf.GradientTape() as tape:
        tape.watch(list(ts.values()))
        out = deform_conv2d(**ts, **attrs, implementation=impl)
        loss = tf.reduce_sum(out * upstream)
    grads = dict(zip(names, tape.gradient(loss, list(ts.values()))))
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-10)
    for k in names:
        np.testing.assert_allclose(grads[k].numpy(), tt[k].grad.numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg=k)


# ----------------------------------------------------------------------------- XLA, dispatch

def test_twin_under_jit_compile():
    args, attrs = _case(51, deform_groups=2, groups=2, strides=2, h=9, w=8)
    want = reference(**args, **attrs)
    fn = tf.function(lambda **kw: deform_conv2d(**kw, **attrs), jit_compile=True)
    got = fn(**{k: tf.constant(v) for k, v in args.items() if v is not None})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_jit_compile_gradient():
    args, attrs = _case(52, modulated=True)
    ts = {k: tf.constant(v) for k, v in args.items() if v is not None}

    @tf.function(jit_compile=True)
    def grads(ts):
        with tf.GradientTape() as tape:
            tape.watch(list(ts.values()))
            loss = tf.reduce_sum(deform_conv2d(**ts, **attrs) ** 2)
        return tape.gradient(loss, list(ts.values()))

    with tf.GradientTape() as tape:
        tape.watch(list(ts.values()))
        loss = tf.reduce_sum(deform_conv2d(**ts, **attrs, implementation="tf") ** 2)
    want = tape.gradient(loss, list(ts.values()))
    for a, b in zip(grads(ts), want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@custom
def test_auto_picks_custom_outside_xla_and_twin_inside():
    args, attrs = _case(53)

    @tf.function
    def plain(x):
        return deform_conv2d(x, args["offset"], args["weight"], **attrs)

    @tf.function(jit_compile=True)
    def xla(x):
        return deform_conv2d(x, args["offset"], args["weight"], **attrs)

    def op_types(fn):
        graph = fn.get_concrete_function(tf.TensorSpec(args["x"].shape)).graph
        return {op.type for op in graph.get_operations()}

    assert "KdetDeformConv2d" in op_types(plain)
    assert "KdetDeformConv2d" not in op_types(xla)
    with pytest.raises(KdetError, match="XLA"):
        tf.function(lambda x: deform_conv2d(x, args["offset"], args["weight"], **attrs,
                                            implementation="custom"),
                    jit_compile=True, autograph=False)(args["x"])


def test_unknown_spatial_size_in_graph():
    args, attrs = _case(54)
    fn = tf.function(lambda x, o, w: deform_conv2d(x, o, w, **attrs),
                     input_signature=[tf.TensorSpec([None, None, None, 4]),
                                      tf.TensorSpec([None, None, None, 18]),
                                      tf.TensorSpec([3, 3, 4, 4])])
    got = fn(args["x"], args["offset"], args["weight"])
    want = reference(args["x"], args["offset"], args["weight"], **attrs)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("change,message", [
    (dict(offset=np.zeros((2, 7, 6, 16), np.float32)), "offset must have 2\\*deform_groups"),
    (dict(mask=np.zeros((2, 7, 6, 8), np.float32)), "mask must have deform_groups"),
    (dict(offset=np.zeros((2, 6, 6, 18), np.float32)), "offset height 6 does not match"),
    (dict(mask=np.zeros((2, 7, 5, 9), np.float32)), "mask width 5 does not match"),
    (dict(offset=np.zeros((1, 7, 6, 18), np.float32)), "offset batch size 1"),
    (dict(mask=np.zeros((2, 7, 6, 9), np.float64)), "mask dtype float64 does not match"),
    (dict(weight=np.zeros((3, 3, 3, 4), np.float32)), "weight.shape\\[2\\] = 3"),
    (dict(bias=np.zeros((5,), np.float32)), "bias must have Cout = 4"),
    (dict(x=np.zeros((2, 7, 6), np.float32)), "x must be \\[B, H, W, Cin\\]"),
    (dict(x=np.zeros((2, 7, 6, 4), np.int32)), "x must be float16"),
])
def test_bad_input_raises_clear_error(change, message):
    args, attrs = _case(61)
    args.update(change)
    with pytest.raises(KdetError, match=message):
        deform_conv2d(**args, **attrs)


@pytest.mark.parametrize("attrs,message", [
    (dict(groups=3), "divisible by groups \\(3\\)"),
    (dict(deform_groups=3), "divisible by deform_groups \\(3\\)"),
    (dict(strides=0), "strides must be"),
    (dict(padding=-1), "padding must be"),
    (dict(dilation=(1,)), "dilation must be"),
])
def test_bad_attributes_raise_clear_error(attrs, message):
    args, _ = _case(62)
    with pytest.raises(KdetError, match=message):
        deform_conv2d(**args, **attrs)


@custom
def test_custom_op_checks_shapes_at_run_time():
    """Dimensions unknown at trace time are checked by the kernel (InvalidArgumentError)."""
    args, attrs = _case(63)
    fn = tf.function(lambda x, o: deform_conv2d(x, o, args["weight"], **attrs,
                                                implementation="custom"),
                     input_signature=[tf.TensorSpec([None, None, None, 4]),
                                      tf.TensorSpec([None, None, None, 18])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="offset must have shape"):
        fn(args["x"], args["offset"][:, :5])


# ----------------------------------------------------------------------------- CUDA sources

@pytest.mark.slow  # nvcc over TensorFlow's headers: ~2-4 min on 2 shared cores, then cached
def test_cuda_sources_compile():
    """deform_conv.cu.cc compiles with nvcc to device code and deform_conv.cc compiles with
    GOOGLE_CUDA=1 (GPU kernel registrations). Compile only: there is no GPU here, so GPU
    execution is unverified."""
    from kdet.custom_ops import build
    if build.find_nvcc() is None or build.find_cxx() is None:
        pytest.skip("nvcc or g++ not found: CUDA sources not checked")
    objects = {o.name: o for o in build.compile_cuda_check()}
    data = objects["deform_conv.cu.cc.o"].read_bytes()
    assert b".nv_fatbin" in data or b"__nv_module_id" in data
    assert b"DeformConv2dGpuOp" in objects["deform_conv.cc.o"].read_bytes()
