"""MMDetection v2 training/test transforms as TensorFlow functions on one image.

Each function works on unbatched tensors inside a `tf.data` map (graph mode):
image [H, W, 3], boxes [n, 4] xyxy pixels, masks [n, H, W] uint8. Semantics follow
mmdet/datasets/pipelines/transforms.py (Resize, RandomFlip, Normalize, Pad) and
mmcv.imrescale; where TF and OpenCV differ, the comment says how it is matched.
"""
import math

import tensorflow as tf

from kdet.errors import KdetError

# mmdet configs: img_norm_cfg. pytorch-style (torchvision weights, RegNet pycls weights
# converted to RGB) vs caffe-style (MSRA / detectron weights: BGR, mean only).
NORMALIZATION = {
    "pytorch": dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), to_rgb=True),
    "caffe": dict(mean=(103.53, 116.28, 123.675), std=(1.0, 1.0, 1.0), to_rgb=False),
}


def normalization(style):
    """The `img_norm_cfg` dict (mean, std, to_rgb) of `style` ('pytorch' or 'caffe')."""
    if style not in NORMALIZATION:
        raise KdetError(f"unknown normalisation style {style!r}; expected one of "
                        f"{sorted(NORMALIZATION)}")
    return dict(NORMALIZATION[style])


def rescale_size(height, width, scale):
    """mmcv.rescale_size for a (long, short) edge pair, in plain Python.

    scale factor s = min(max(scale) / max(h, w), min(scale) / min(h, w)) and the new
    size is (int(h*s + 0.5), int(w*s + 0.5)). Returns (new_h, new_w, (sy, sx)) with the
    actual per-axis factors new/old that mmdet's Resize stores as `scale_factor`.
    """
    s = min(max(scale) / max(height, width), min(scale) / min(height, width))
    new_h, new_w = int(height * float(s) + 0.5), int(width * float(s) + 0.5)
    return new_h, new_w, (new_h / height, new_w / width)


def rescale_size_tf(height, width, long_edge, short_edge, fit_within=None):
    """`rescale_size` in graph; returns int32 (new_h, new_w).

    Computed in float64 so the +0.5 rounding matches Python's. `fit_within=(H, W)`
    additionally caps the factor so the result fits a fixed pad size (static shapes).
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    long_edge = tf.cast(long_edge, tf.float64)
    short_edge = tf.cast(short_edge, tf.float64)
    s = tf.minimum(long_edge / tf.maximum(h, w), short_edge / tf.minimum(h, w))
    if fit_within is not None:
        s = tf.minimum(s, tf.minimum(fit_within[0] / h, fit_within[1] / w))
    new_h = tf.cast(tf.floor(h * s + 0.5), tf.int32)
    new_w = tf.cast(tf.floor(w * s + 0.5), tf.int32)
    if fit_within is not None:
        new_h = tf.minimum(new_h, fit_within[0])
        new_w = tf.minimum(new_w, fit_within[1])
    return tf.maximum(new_h, 1), tf.maximum(new_w, 1)


def sample_scale(seed, img_scales, mode):
    """Picks the (long, short) target of one image, as mmdet Resize._random_scale.

    Args:
      seed: int32/int64 [2] stateless seed.
      img_scales: list of (w, h)-style pairs; only their long/short edges matter.
      mode: None (one scale), 'range' (two scales: long and short edges each sampled
        uniformly over the integers between the two, inclusive, as
        `Resize.random_sample`), or 'value' (one of the scales, `Resize.random_select`).
    Returns int32 scalars (long_edge, short_edge).
    """
    longs = [max(s) for s in img_scales]
    shorts = [min(s) for s in img_scales]
    if mode is None or len(img_scales) == 1:
        return tf.constant(longs[0], tf.int32), tf.constant(shorts[0], tf.int32)
    if mode == "range":
        long_edge = tf.random.stateless_uniform(
            [], seed, minval=min(longs), maxval=max(longs) + 1, dtype=tf.int32)
        short_edge = tf.random.stateless_uniform(
            [], seed + 1, minval=min(shorts), maxval=max(shorts) + 1, dtype=tf.int32)
        return long_edge, short_edge
    if mode == "value":
        idx = tf.random.stateless_uniform([], seed, minval=0, maxval=len(img_scales),
                                          dtype=tf.int32)
        return tf.gather(tf.constant(longs, tf.int32), idx), \
            tf.gather(tf.constant(shorts, tf.int32), idx)
    raise KdetError(f"unknown multiscale_mode {mode!r}; expected None, 'range' or 'value'")


def resize_image(image, new_h, new_w):
    """Bilinear resize of a uint8 [H, W, 3] image -> float32 [new_h, new_w, 3].

    Half-pixel centres without antialiasing, as cv2.INTER_LINEAR (mmcv's default
    backend); rounded and clipped to 0..255 because cv2 returns uint8 for uint8 input.
    """
    out = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=False)
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def _nearest_index(out_size, in_size):
    """cv2 INTER_NEAREST source index: min(floor(dst * (1 / (out / in))), in - 1), float64."""
    inv = 1.0 / (tf.cast(out_size, tf.float64) / tf.cast(in_size, tf.float64))
    idx = tf.floor(tf.range(out_size, dtype=tf.float64) * inv)
    return tf.minimum(tf.cast(idx, tf.int32), tf.cast(in_size, tf.int32) - 1)


def resize_masks(masks, new_h, new_w):
    """Nearest resize of uint8 masks [n, H, W] -> [n, new_h, new_w].

    Source pixel as cv2.INTER_NEAREST computes it (no half-pixel shift), which mmdet's
    BitmapMasks.rescale uses; done with gathers along leading axes (3x faster than TF's
    ResizeNearestNeighbor on uint8 on CPU).
    """
    shape = tf.shape(masks)
    rows = _nearest_index(new_h, shape[1])
    cols = _nearest_index(new_w, shape[2])
    out = tf.gather(masks, rows, axis=1)                       # [n, new_h, W]
    out = tf.gather(tf.transpose(out, [2, 0, 1]), cols)        # [new_w, n, new_h]
    return tf.transpose(out, [1, 2, 0])


def resize_boxes(boxes, scale_y, scale_x, new_h, new_w):
    """Scales xyxy boxes [n, 4] and clips them to the resized image (bbox_clip_border)."""
    scale = tf.stack([scale_x, scale_y, scale_x, scale_y])
    boxes = boxes * tf.cast(scale, boxes.dtype)
    hi = tf.cast(tf.stack([new_w, new_h, new_w, new_h]), boxes.dtype)
    return tf.clip_by_value(boxes, 0.0, hi)


def flip_boxes_horizontal(boxes, width):
    """mmdet v2 RandomFlip.bbox_flip: x1' = w - x2, x2' = w - x1 ([n, 4] xyxy)."""
    w = tf.cast(width, boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([w - x2, y1, w - x1, y2], axis=-1)


def normalize_image(image, style):
    """Normalise a float32 RGB [H, W, 3] image (0..255) per `style`.

    pytorch: (RGB - mean) / std; caffe: BGR - mean (std 1), mmdet Normalize.
    """
    cfg = normalization(style)
    if not cfg["to_rgb"]:
        image = image[..., ::-1]  # decoded images are RGB; caffe weights expect BGR
    mean = tf.constant(cfg["mean"], tf.float32)
    std = tf.constant(cfg["std"], tf.float32)
    return (image - mean) / std


def padded_size(height, width, size_divisor):
    """Smallest (H, W) >= (height, width) that are multiples of `size_divisor` (mmdet Pad)."""
    d = tf.constant(size_divisor, tf.int32)
    return (height + d - 1) // d * d, (width + d - 1) // d * d


def pad_bottom_right(x, target_h, target_w, spatial_axes=(0, 1)):
    """Zero-pads `x` at the bottom/right to (target_h, target_w) on `spatial_axes`."""
    shape = tf.shape(x)
    paddings = [[0, 0] for _ in range(x.shape.rank)]
    paddings[spatial_axes[0]] = [0, target_h - shape[spatial_axes[0]]]
    paddings[spatial_axes[1]] = [0, target_w - shape[spatial_axes[1]]]
    return tf.pad(x, paddings)


def check_img_scale(scale, name="img_scale"):
    """Validates a (long, short)-edge pair of positive numbers; returns it as a tuple."""
    try:
        out = tuple(int(v) for v in scale)
    except (TypeError, ValueError):
        raise KdetError(f"{name} must be a pair of positive integers, got {scale!r}") from None
    if len(out) != 2 or min(out) <= 0 or any(math.isnan(v) for v in out):
        raise KdetError(f"{name} must be a pair of positive integers, got {scale!r}")
    return out
