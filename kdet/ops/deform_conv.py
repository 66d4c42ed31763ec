"""Deformable convolution: DCNv1 (DeformConv2d) and modulated DCNv2 (ModulatedDeformConv2d).

Semantics are mmcv's (``mmcv/ops/csrc/common/*deform_conv*``) with the channel axis last:

* the kernel point ``k = i * kw + j`` of output pixel ``(ho, wo)`` samples the input at
  ``(ho * stride_h - pad_h + i * dilation_h + dy, wo * stride_w - pad_w + j * dilation_w + dx)``
  (pixel centres at integer coordinates), where ``(dy, dx)`` are
  ``offset[b, ho, wo, 2 * (g * kh * kw + k) + (0, 1)]`` for deform group ``g``;
* the sample is bilinear; a point with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W``
  reads 0, otherwise each of its four integer neighbours contributes its bilinear weight
  when it lies inside the map and 0 when it does not (zero padding of the input);
* DCNv2 multiplies the sample by ``mask[b, ho, wo, g * kh * kw + k]``;
* input channel ``c`` uses deform group ``c // (C / deform_groups)``; convolution groups are
  PyTorch's (output channel ``o`` sees input channels of group ``o // (Cout / groups)``).

Two implementations with the same semantics: the C++/CUDA op of ``kdet.custom_ops`` (fast on
CPU, cannot run under XLA) and a pure-TensorFlow twin built from gathers (runs anywhere,
including ``jit_compile=True``). ``kdet.ops._dispatch`` picks one.
"""
import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops import _dispatch

__all__ = ["deform_conv2d"]

_OP = "kdet_deform_conv2d"  # Python name of the KdetDeformConv2d op in the library
_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


# ----------------------------------------------------------------------------- arguments

def _pair(value, name, minimum):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= minimum for v in value):
        raise KdetError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return value


def _conv_out(size, kernel, stride, pad, dilation):
    """Output size of a convolution with symmetric zero padding (PyTorch's formula)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _check_dim(actual, expected, what):
    if actual is not None and expected is not None and actual != expected:
        raise KdetError(what.format(actual=actual, expected=expected))


def _prepare(x, offset, weight, bias, mask, strides, padding, dilation, groups, deform_groups):
    """Converts and validates the arguments; raises KdetError naming the problem.

    Returns (x, offset, weight, bias, mask, attrs) with attrs a dict of normalised ints.
    Static dimensions are checked here; dimensions unknown at trace time are checked by the
    custom op at run time (InvalidArgumentError).
    """
    x = tf.convert_to_tensor(x)
    if x.dtype not in _DTYPES:
        raise KdetError(f"deform_conv2d: x must be float16, bfloat16, float32 or float64, "
                        f"got {x.dtype.name}")
    tensors = {"offset": offset, "weight": weight, "bias": bias, "mask": mask}
    for name, t in tensors.items():
        if t is None:
            continue
        # Python lists take x's dtype; arrays, tensors and variables keep their own.
        t = tf.convert_to_tensor(t, dtype_hint=None if hasattr(t, "dtype") else x.dtype)
        if t.dtype != x.dtype:
            raise KdetError(f"deform_conv2d: {name} dtype {t.dtype.name} does not match "
                            f"x dtype {x.dtype.name}")
        tensors[name] = t
    offset, weight, bias, mask = (tensors[k] for k in ("offset", "weight", "bias", "mask"))
    for name, t, rank, layout in (("x", x, 4, "[B, H, W, Cin]"),
                                  ("offset", offset, 4, "[B, Ho, Wo, 2*deform_groups*kh*kw]"),
                                  ("weight", weight, 4, "[kh, kw, Cin/groups, Cout]"),
                                  ("mask", mask, 4, "[B, Ho, Wo, deform_groups*kh*kw]"),
                                  ("bias", bias, 1, "[Cout]")):
        if t is not None and t.shape.rank is not None and t.shape.rank != rank:
            raise KdetError(f"deform_conv2d: {name} must be {layout}, got shape {t.shape}")
    strides = _pair(strides, "strides", 1)
    padding = _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    if not isinstance(groups, int) or groups < 1:
        raise KdetError(f"deform_conv2d: groups must be a positive int, got {groups!r}")
    if not isinstance(deform_groups, int) or deform_groups < 1:
        raise KdetError(f"deform_conv2d: deform_groups must be a positive int, "
                        f"got {deform_groups!r}")
    if weight.shape.rank is None or None in weight.shape[:2]:
        raise KdetError("deform_conv2d: the kernel size (weight.shape[:2]) must be static")
    kh, kw, wcin, cout = weight.shape
    cin = x.shape[-1] if x.shape.rank else None
    if cin is not None:
        if cin % groups:
            raise KdetError(f"deform_conv2d: input channels ({cin}) must be divisible by "
                            f"groups ({groups})")
        if cin % deform_groups:
            raise KdetError(f"deform_conv2d: input channels ({cin}) must be divisible by "
                            f"deform_groups ({deform_groups})")
        _check_dim(wcin, cin // groups, "deform_conv2d: weight must be [kh, kw, Cin/groups, "
                   "Cout] with Cin/groups = {expected}, got weight.shape[2] = {actual}")
    if cout is not None and cout % groups:
        raise KdetError(f"deform_conv2d: output channels ({cout}) must be divisible by "
                        f"groups ({groups})")
    kp = kh * kw
    _check_dim(offset.shape[-1], 2 * deform_groups * kp,
               "deform_conv2d: offset must have 2*deform_groups*kh*kw = {expected} channels, "
               "got {actual}")
    if mask is not None:
        _check_dim(mask.shape[-1], deform_groups * kp,
                   "deform_conv2d: mask must have deform_groups*kh*kw = {expected} channels, "
                   "got {actual}")
    if bias is not None:
        _check_dim(bias.shape[0], cout, "deform_conv2d: bias must have Cout = {expected} "
                   "elements, got {actual}")
    out_hw = [None, None]
    for i in range(2):
        size = x.shape[1 + i] if x.shape.rank else None
        if size is not None:
            out_hw[i] = _conv_out(size, weight.shape[i], strides[i], padding[i], dilation[i])
            if out_hw[i] < 1:
                raise KdetError(f"deform_conv2d: input {tuple(x.shape[1:3])} is too small for "
                                f"the {kh}x{kw} kernel with dilation {dilation} and padding "
                                f"{padding}")
    for name, t in (("offset", offset), ("mask", mask)):
        if t is None:
            continue
        _check_dim(t.shape[0], x.shape[0], f"deform_conv2d: {name} batch size {{actual}} "
                   "does not match x batch size {expected}")
        for i, axis in enumerate(("height", "width")):
            _check_dim(t.shape[1 + i], out_hw[i], f"deform_conv2d: {name} {axis} {{actual}} "
                       "does not match the output " + axis + " {expected}")
    attrs = dict(strides=strides, padding=padding, dilation=dilation, groups=groups,
                 deform_groups=deform_groups)
    return x, offset, weight, bias, mask, attrs


# ----------------------------------------------------------------------------- public API

def deform_conv2d(x, offset, weight, bias=None, mask=None, strides=1, padding=0, dilation=1,
                  groups=1, deform_groups=1, implementation=None):
    """Deformable 2-D convolution (DCNv1; DCNv2 when ``mask`` is given), NHWC.

    Args:
      x: [B, H, W, Cin] float16/bfloat16/float32/float64.
      offset: [B, Ho, Wo, 2*deform_groups*kh*kw] sampling offsets in input pixels; for each
        deform group, for each kernel point k (row-major over kh, kw), the pair (dy, dx).
      weight: [kh, kw, Cin/groups, Cout].
      bias: [Cout] or None.
      mask: [B, Ho, Wo, deform_groups*kh*kw] modulation (DCNv2), or None (DCNv1).
      strides, padding, dilation: int or (h, w) pair; padding is symmetric zero padding in
        pixels (PyTorch/mmcv), so Ho = (H + 2*pad - dilation*(kh-1) - 1) // stride + 1.
      groups: convolution groups; deform_groups: groups of input channels sharing offsets.
      implementation: None (process-wide setting), "auto", "custom" or "tf".
    Returns:
      [B, Ho, Wo, Cout] of x's dtype (half types are accumulated in float32).
    Raises:
      KdetError: wrong ranks, channel counts, spatial sizes or dtypes (names the problem).
    """
    x, offset, weight, bias, mask, attrs = _prepare(
        x, offset, weight, bias, mask, strides, padding, dilation, groups, deform_groups)
    if _dispatch.select(implementation, op=_OP) == "custom":
        return _deform_conv2d_custom(x, offset, weight, bias, mask, **attrs)
    return _deform_conv2d_twin(x, offset, weight, bias, mask, **attrs)


# ----------------------------------------------------------------------------- custom op

def _library():
    from kdet.custom_ops import build
    module = build.load_library()
    if module is None:
        raise KdetError(f"kdet op library unavailable: {build.info()['reason']}")
    return module


def _deform_conv2d_custom(x, offset, weight, bias, mask, strides, padding, dilation, groups,
                          deform_groups):
    empty = tf.zeros([0], x.dtype)
    return _library().kdet_deform_conv2d(
        x, offset, empty if mask is None else mask, weight, empty if bias is None else bias,
        strides=list(strides), padding=list(padding), dilation=list(dilation), groups=groups,
        deform_groups=deform_groups, use_mask=mask is not None, use_bias=bias is not None)


@tf.RegisterGradient("KdetDeformConv2d")
def _deform_conv2d_grad(op, grad):
    attrs = {k: op.get_attr(k) for k in ("strides", "padding", "dilation", "groups",
                                         "deform_groups", "use_mask", "use_bias")}
    gx, goff, gmask, gw, gb = _library().kdet_deform_conv2d_grad(
        op.inputs[0], op.inputs[1], op.inputs[2], op.inputs[3], grad, **attrs)
    return [gx, goff, gmask if attrs["use_mask"] else None, gw,
            gb if attrs["use_bias"] else None]


# ----------------------------------------------------------------------------- pure-TF twin

def _deform_conv2d_twin(x, offset, weight, bias, mask, strides, padding, dilation, groups,
                        deform_groups):
    """Pure-TF deformable convolution from gathers (XLA-compatible; autodiff gradients).

    Computes in float32 (float64 for float64 inputs) and returns x's dtype.
    """
    out_dtype = x.dtype
    cdtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    x, offset, weight = (tf.cast(t, cdtype) for t in (x, offset, weight))
    kh, kw, cin_g, cout = weight.shape
    kp = kh * kw
    dg = deform_groups
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    cin = cin_g * groups
    cdg = cin // dg
    ho = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // strides[0] + 1
    wo = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // strides[1] + 1

    # Sampling points [B, Ho, Wo, dg, K] in input pixels.
    ki = tf.constant([k // kw for k in range(kp)], cdtype) * dilation[0]
    kj = tf.constant([k % kw for k in range(kp)], cdtype) * dilation[1]
    base_y = tf.cast(tf.range(ho) * strides[0] - padding[0], cdtype)
    base_x = tf.cast(tf.range(wo) * strides[1] - padding[1], cdtype)
    off = tf.reshape(offset, [b, ho, wo, dg, kp, 2])
    py = base_y[None, :, None, None, None] + ki + off[..., 0]
    px = base_x[None, None, :, None, None] + kj + off[..., 1]
    hf, wf = tf.cast(h, cdtype), tf.cast(w, cdtype)
    inside = (py > -1.0) & (px > -1.0) & (py < hf) & (px < wf)
    # Clamp before flooring so that huge or non-finite offsets give valid int32 indices; the
    # weights of such points are zeroed by `inside` anyway.
    py = tf.where(inside, py, tf.zeros_like(py))
    px = tf.where(inside, px, tf.zeros_like(px))
    y0 = tf.floor(py)
    x0 = tf.floor(px)
    ly, lx = py - y0, px - x0
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)
    scale = tf.cast(inside, cdtype)
    if mask is not None:
        scale *= tf.reshape(tf.cast(mask, cdtype), [b, ho, wo, dg, kp])

    # Gather per deform group: x as [B, dg, H*W, C/dg], points as [B, dg, Ho*Wo*K].
    xg = tf.transpose(tf.reshape(x, [b, h * w, dg, cdg]), [0, 2, 1, 3])

    def to_points(t):
        return tf.reshape(tf.transpose(t, [0, 3, 1, 2, 4]), [b, dg, -1])

    cols = None
    for dy, dx, wy, wx in ((0, 0, 1.0 - ly, 1.0 - lx), (0, 1, 1.0 - ly, lx),
                           (1, 0, ly, 1.0 - lx), (1, 1, ly, lx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx = tf.where(ok, yy * w + xx, tf.zeros_like(yy))
        wt = wy * wx * scale * tf.cast(ok, cdtype)
        term = tf.gather(xg, to_points(idx), batch_dims=2) * to_points(wt)[..., None]
        cols = term if cols is None else cols + term
    # [B, dg, Ho*Wo*K, C/dg] -> [B*Ho*Wo, K, Cin]
    cols = tf.reshape(cols, [b, dg, ho * wo, kp, cdg])
    cols = tf.reshape(tf.transpose(cols, [0, 2, 3, 1, 4]), [b * ho * wo, kp, cin])
    if groups == 1:
        out = tf.matmul(tf.reshape(cols, [-1, kp * cin]), tf.reshape(weight, [kp * cin, cout]))
    else:
        cols = tf.reshape(cols, [-1, kp, groups, cin_g])
        wg = tf.reshape(weight, [kp, cin_g, groups, cout // groups])
        out = tf.einsum("pkgc,kcgo->pgo", cols, wg)
    out = tf.reshape(out, [b, ho, wo, cout])
    if bias is not None:
        out = out + tf.cast(bias, cdtype)
    return tf.cast(out, out_dtype)
