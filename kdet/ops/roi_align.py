"""RoIAlign with mmcv / torchvision semantics on NHWC features.

``roi_align`` dispatches to the C++/CUDA op (``kdet/custom_ops/roi_align*.cc``) or to the
pure-TF twin ``roi_align_tf`` (see `kdet.ops._dispatch`). Both compute, for every RoI and
every output bin, the average of ``grid_h x grid_w`` bilinear samples (float32 math).

Coordinates, with ``aligned=True`` (mmcv ``RoIAlign(aligned=True)``, Detectron2 ``ROIAlignV2``):
pixel ``(i, j)`` of a feature map covers the continuous box ``[j, j+1) x [i, i+1)``, and its
value sits at its centre ``(j + 0.5, i + 0.5)``. A RoI ``(x1, y1, x2, y2)`` in input pixels
becomes ``x1 * spatial_scale`` ... in feature-map units; subtracting 0.5 moves it into the
frame where pixel centres are integers, the frame bilinear interpolation indexes in. So a RoI
``(0, 0, 2, 2)`` at ``spatial_scale=1`` covers exactly pixels 0 and 1 of each axis (start -0.5,
end 1.5), and with ``output_size=1, sampling_ratio=2`` its samples land at -0.0 and 1.0,
i.e. on the centres of pixels 0 and 1: the output is their plain mean. With ``aligned=False``
(the legacy behaviour) the 0.5 shift is missing, so the same RoI samples at 0.5 and 1.5,
half a pixel off, and RoI sizes are clamped to at least 1 feature pixel.

``sampling_ratio=0`` is adaptive: ``ceil(roi_size / output_size)`` samples per bin and axis,
computed per RoI, so the number of samples varies between RoIs.
"""
import math

import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops import _dispatch

OP_NAME = "KdetRoiAlign"
_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def _output_size(output_size):
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                 for s in size):
        raise KdetError(f"roi_align: output_size must be a positive int or a pair of them, "
                        f"got {output_size!r}")
    return size


def _check_args(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Trace-time checks; returns (features, rois, (out_h, out_w))."""
    size = _output_size(output_size)
    if not (isinstance(spatial_scale, (int, float)) and math.isfinite(spatial_scale)
            and spatial_scale > 0):
        raise KdetError(f"roi_align: spatial_scale must be a finite number > 0, "
                        f"got {spatial_scale!r}")
    if (not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool)
            or sampling_ratio < 0):
        raise KdetError(f"roi_align: sampling_ratio must be an int >= 0 (0 = adaptive), "
                        f"got {sampling_ratio!r}")
    if not isinstance(aligned, bool):
        raise KdetError(f"roi_align: aligned must be a bool, got {aligned!r}")
    # dtype_hint: Python lists of numbers become float32; integer tensors/arrays stay integer
    # and are rejected below.
    features = tf.convert_to_tensor(features, dtype_hint=tf.float32)
    rois = tf.convert_to_tensor(rois, dtype_hint=tf.float32)
    for name, t in (("features", features), ("rois", rois)):
        if t.dtype not in _FLOAT_DTYPES:
            raise KdetError(f"roi_align: {name} must be a floating tensor (float16, bfloat16, "
                            f"float32 or float64), got {t.dtype.name}")
    if features.shape.rank is not None and features.shape.rank != 4:
        raise KdetError(f"roi_align: features must be 4-D [B, H, W, C], got shape {features.shape}")
    if rois.shape.rank is not None and (rois.shape.rank != 2 or rois.shape[1] not in (None, 5)):
        raise KdetError(f"roi_align: rois must have shape [K, 5] (batch_index, x1, y1, x2, y2), "
                        f"got shape {rois.shape}")
    return features, rois, size


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=True,
              implementation=None):
    """RoIAlign (average) of ``rois`` over ``features``, mmcv semantics.

    Args:
      features: [B, H, W, C] float16/bfloat16/float32/float64 feature map.
      rois: [K, 5] float rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
      output_size: int or (out_h, out_w).
      spatial_scale: feature pixels per input pixel (1/stride, e.g. 1/4 for an FPN P2).
      sampling_ratio: samples per bin and axis; 0 = adaptive ``ceil(roi_size / out_size)``.
      aligned: True shifts RoIs by -0.5 feature pixels (see the module docstring).
      implementation: None (process-wide setting), "auto", "custom" or "tf".
    Returns:
      [K, out_h, out_w, C] in the dtype of ``features`` (computed in float32).
    Raises:
      KdetError: bad argument or static shape/dtype. InvalidArgumentError at run time: rois
      with a non-finite value or a batch index outside [0, B).
    """
    features, rois, (oh, ow) = _check_args(features, rois, output_size, spatial_scale,
                                           sampling_ratio, aligned)
    dtype = features.dtype
    f32 = tf.cast(features, tf.float32)
    r32 = tf.cast(rois, tf.float32)
    if _dispatch.select(implementation, op="kdet_roi_align") == "custom":
        from kdet.custom_ops import load_library
        out = load_library().kdet_roi_align(
            f32, r32, pooled_height=oh, pooled_width=ow, spatial_scale=float(spatial_scale),
            sampling_ratio=sampling_ratio, aligned=aligned)
    else:
        out = _roi_align_twin(f32, r32, oh, ow, float(spatial_scale), sampling_ratio, aligned)
    return tf.cast(out, dtype)


@tf.RegisterGradient(OP_NAME)
def _roi_align_grad(op, grad):
    from kdet.custom_ops import load_library
    features, rois = op.inputs
    grad_features = load_library().kdet_roi_align_grad(
        grad, rois, tf.shape(features, out_type=tf.int32),
        pooled_height=op.get_attr("pooled_height"), pooled_width=op.get_attr("pooled_width"),
        spatial_scale=op.get_attr("spatial_scale"), sampling_ratio=op.get_attr("sampling_ratio"),
        aligned=op.get_attr("aligned"))
    return [grad_features, None]  # RoI coordinates get no gradient (as in mmcv)


# ----------------------------------------------------------------------------- pure-TF twin

def roi_align_tf(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=True):
    """The pure-TF twin of `roi_align` (same arguments and result); runs under XLA.

    Built from gathers (``tf.image.crop_and_resize`` has no XLA kernel). The adaptive sample
    count is handled exactly: a ``tf.while_loop`` runs over sample slots
    ``s < max_k(grid_h[k] * grid_w[k])``, each RoI taking sample ``(s // grid_w, s % grid_w)``
    while ``s`` is below its own count, so shapes stay static and no sample is dropped. The
    features gradient is a matching scatter loop (``tf.custom_gradient``).
    """
    features, rois, (oh, ow) = _check_args(features, rois, output_size, spatial_scale,
                                           sampling_ratio, aligned)
    dtype = features.dtype
    out = _roi_align_twin(tf.cast(features, tf.float32), tf.cast(rois, tf.float32), oh, ow,
                          float(spatial_scale), sampling_ratio, aligned)
    return tf.cast(out, dtype)


def _axis_weights(v, size):
    """mmcv's bilinear rule along one axis: (low, high, w_low, w_high), weights 0 if outside."""
    size_f = tf.cast(size, tf.float32)
    inside = (v >= -1.0) & (v <= size_f)
    v = tf.maximum(v, 0.0)
    low = tf.cast(tf.floor(v), tf.int32)
    at_edge = low >= size - 1
    low = tf.where(at_edge, size - 1, low)
    high = tf.where(at_edge, size - 1, low + 1)
    v = tf.where(at_edge, tf.cast(low, tf.float32), v)
    frac = v - tf.cast(low, tf.float32)
    zero = tf.zeros_like(frac)
    return low, high, tf.where(inside, 1.0 - frac, zero), tf.where(inside, frac, zero)


def _roi_geometry(rois, oh, ow, spatial_scale, sampling_ratio, aligned):
    """Per-RoI start, bin size and grid (float32 arithmetic in mmcv's order)."""
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    roi_w = (rois[:, 3] * spatial_scale - offset) - start_w
    roi_h = (rois[:, 4] * spatial_scale - offset) - start_h
    if not aligned:
        roi_w = tf.maximum(roi_w, 1.0)
        roi_h = tf.maximum(roi_h, 1.0)
    bin_h, bin_w = roi_h / float(oh), roi_w / float(ow)
    if sampling_ratio > 0:
        grid_h = tf.fill(tf.shape(start_h), sampling_ratio)
        grid_w = grid_h
    else:
        grid_h = tf.cast(tf.math.ceil(roi_h / float(oh)), tf.int32)
        grid_w = tf.cast(tf.math.ceil(roi_w / float(ow)), tf.int32)
    # Negative grids (aligned RoIs with x2 < x1) take no samples and yield 0, as mmcv's CUDA.
    n = tf.maximum(grid_h, 0) * tf.maximum(grid_w, 0)
    count = tf.cast(tf.maximum(n, 1), tf.float32)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, n, count


def _roi_validity(rois, batch):
    """(valid [K] bool, asserts): finite rows with an integral batch index in [0, B)."""
    finite = tf.reduce_all(tf.math.is_finite(rois), axis=1)
    b = rois[:, 0]
    in_range = (b >= 0.0) & (b < tf.cast(batch, tf.float32)) & (tf.floor(b) == b)
    valid = finite & in_range
    if _dispatch.in_xla_context():
        return valid, []  # XLA cannot raise at run time: invalid RoIs give zeros instead
    rows = tf.range(tf.shape(rois)[0])
    k_bad_finite = tf.reduce_min(tf.where(finite, tf.shape(rois)[0], rows))
    k_bad_index = tf.reduce_min(tf.where(valid | ~finite, tf.shape(rois)[0], rows))
    asserts = [
        tf.debugging.Assert(tf.reduce_all(finite), [
            "RoIAlign: rois has a non-finite value at row", k_bad_finite]),
        tf.debugging.Assert(tf.reduce_all(valid | ~finite), [
            "RoIAlign: rois has a batch index that is not an integer in [0, B) at row",
            k_bad_index, "B =", batch]),
    ]
    return valid, asserts


def _roi_align_twin(features, rois, oh, ow, spatial_scale, sampling_ratio, aligned):
    """float32 features [B,H,W,C], rois [K,5] -> [K,oh,ow,C]."""
    if tf.executing_eagerly():  # run the sample loop as a graph, not op by op from Python
        return _roi_align_twin_graph(features, rois, oh, ow, spatial_scale, sampling_ratio,
                                     aligned)
    return _roi_align_twin_body(features, rois, oh, ow, spatial_scale, sampling_ratio, aligned)


def _roi_align_twin_body(features, rois, oh, ow, spatial_scale, sampling_ratio, aligned):
    shape = tf.shape(features)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    valid, asserts = _roi_validity(rois, batch)
    with tf.control_dependencies(asserts):
        rois = tf.identity(rois)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w, n, count = _roi_geometry(
        rois, oh, ow, spatial_scale, sampling_ratio, aligned)
    n = tf.where(valid, n, 0)
    num_slots = tf.reduce_max(tf.concat([n, [0]], axis=0))
    # Flat index of each RoI's image; clamped so that gathers stay in range for invalid rows.
    image = tf.clip_by_value(tf.cast(tf.where(valid, rois[:, 0], 0.0), tf.int32), 0,
                             tf.maximum(batch - 1, 0))
    base = image * height * width
    grid_w1 = tf.maximum(grid_w, 1)
    grid_hf = tf.cast(grid_h, tf.float32)
    grid_wf = tf.cast(grid_w, tf.float32)
    bins_h = tf.range(oh, dtype=tf.float32)
    bins_w = tf.range(ow, dtype=tf.float32)

    def corners(s):
        """Sample slot s of every RoI and bin: flat indices [K,oh,ow,4], weights [K,oh,ow,4]."""
        iy = tf.cast(s // grid_w1, tf.float32)
        ix = tf.cast(s % grid_w1, tf.float32)
        take = tf.cast(s < n, tf.float32)[:, None, None]
        # start + p * bin + (i + 0.5) * bin / grid, evaluated in this order as in mmcv.
        y = (start_h[:, None] + bins_h[None, :] * bin_h[:, None]) + (
            ((iy + 0.5) * bin_h) / grid_hf)[:, None]
        x = (start_w[:, None] + bins_w[None, :] * bin_w[:, None]) + (
            ((ix + 0.5) * bin_w) / grid_wf)[:, None]
        # Slots past a RoI's count (or all slots of a gridless RoI) are masked below; keep their
        # coordinates finite so that no NaN reaches the weights.
        y = tf.where(tf.math.is_finite(y), y, -2.0)
        x = tf.where(tf.math.is_finite(x), x, -2.0)
        y_lo, y_hi, wy_lo, wy_hi = _axis_weights(y, height)  # [K, oh]
        x_lo, x_hi, wx_lo, wx_hi = _axis_weights(x, width)   # [K, ow]
        row_lo = base[:, None] + y_lo * width
        row_hi = base[:, None] + y_hi * width
        rows = (row_lo[:, :, None], row_lo[:, :, None], row_hi[:, :, None], row_hi[:, :, None])
        cols = (x_lo[:, None, :], x_hi[:, None, :], x_lo[:, None, :], x_hi[:, None, :])
        idx = tf.stack([r + c for r, c in zip(rows, cols)], axis=-1)
        w = tf.stack([wy_lo[:, :, None] * wx_lo[:, None, :], wy_lo[:, :, None] * wx_hi[:, None, :],
                      wy_hi[:, :, None] * wx_lo[:, None, :], wy_hi[:, :, None] * wx_hi[:, None, :]],
                     axis=-1)
        return idx, w * take[..., None]

    @tf.custom_gradient
    def pool(features):
        flat = tf.reshape(features, [-1, channels])
        num_rois = tf.shape(rois)[0]

        def body(s, acc):
            idx, w = corners(s)
            vals = tf.gather(flat, idx)  # [K, oh, ow, 4, C]
            return s + 1, acc + tf.reduce_sum(vals * w[..., None], axis=3)

        acc0 = tf.zeros(tf.stack([num_rois, oh, ow, channels]), tf.float32)
        _, acc = tf.while_loop(lambda s, acc: s < num_slots, body, (tf.constant(0), acc0))
        out = acc / count[:, None, None, None]

        def grad_fn(dy):
            g = dy / count[:, None, None, None]

            def gbody(s, acc):
                idx, w = corners(s)
                contrib = g[:, :, :, None, :] * w[..., None]  # [K, oh, ow, 4, C]
                return s + 1, tf.tensor_scatter_nd_add(acc, tf.reshape(idx, [-1, 1]),
                                                       tf.reshape(contrib, [-1, channels]))

            _, gflat = tf.while_loop(lambda s, acc: s < num_slots, gbody,
                                     (tf.constant(0), tf.zeros_like(flat)))
            return tf.reshape(gflat, shape)

        return out, grad_fn

    out = pool(features)
    out = tf.where(valid[:, None, None, None], out, 0.0)
    out.set_shape([rois.shape[0], oh, ow, features.shape[3]])
    return out


_roi_align_twin_graph = tf.function(_roi_align_twin_body, reduce_retracing=True)
