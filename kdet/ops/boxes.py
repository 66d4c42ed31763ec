"""Box tensor functions: overlaps (IoU / IoF / GIoU), area, clipping, flipping, formats.

Boxes are absolute-pixel ``xyxy`` (x1, y1, x2, y2) float tensors unless an argument
says otherwise, with MMDetection v2's continuous convention: width = x2 - x1 (no +1).
Every function is batched over leading axes, keeps static shapes and compiles
under XLA (``tf.function(jit_compile=True)``). Computation is float32 whatever the
input dtype (mixed-precision safe).
"""
import tensorflow as tf

from kdet.errors import KdetError

# mmdet/core/bbox/iou_calculators/iou2d_calculator.py: bbox_overlaps(eps=1e-6)
# clamps the union and the enclosing area from below by eps.
IOU_EPS = 1e-6

_OVERLAP_MODES = ("iou", "iof", "giou")
BOX_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "rel_xyxy")


def _f32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _check_boxes(boxes, name):
    if boxes.shape.rank is not None and (boxes.shape.rank < 1 or boxes.shape[-1] not in (4, None)):
        raise KdetError(f"{name} must have shape [..., 4], got {boxes.shape}")


def _check_mode(mode):
    if mode not in _OVERLAP_MODES:
        raise KdetError(f"overlap mode must be one of {_OVERLAP_MODES}, got {mode!r}")


def box_area(boxes):
    """Area of ``xyxy`` boxes [..., 4] -> [...] (pixels^2; can be negative for
    inverted boxes, as mmdet's ``(x2 - x1) * (y2 - y1)``)."""
    boxes = _f32(boxes)
    _check_boxes(boxes, "boxes")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_overlaps(boxes1, boxes2, mode="iou", eps=IOU_EPS):
    """Overlaps between every pair of two box sets, mmdet's ``bbox_overlaps``.

    Args:
        boxes1: [..., N, 4] xyxy.
        boxes2: [..., M, 4] xyxy; leading axes broadcast against ``boxes1``'s.
        mode: "iou" (intersection / union), "iof" (intersection / area of
            ``boxes1``, i.e. intersection over foreground) or "giou".
        eps: lower bound of the union (and of the enclosing area for GIoU).
    Returns:
        [..., N, M] float32.
    """
    _check_mode(mode)
    b1, b2 = _f32(boxes1), _f32(boxes2)
    _check_boxes(b1, "boxes1")
    _check_boxes(b2, "boxes2")
    b1 = b1[..., :, None, :]  # [..., N, 1, 4]
    b2 = b2[..., None, :, :]  # [..., 1, M, 4]
    return _overlaps(b1, b2, mode, eps)


def aligned_overlaps(boxes1, boxes2, mode="iou", eps=IOU_EPS):
    """Overlaps of corresponding boxes (mmdet ``bbox_overlaps(is_aligned=True)``).

    Args:
        boxes1, boxes2: [..., 4] xyxy (broadcasting).
        mode: "iou", "iof" or "giou".
    Returns:
        [...] float32.
    """
    _check_mode(mode)
    b1, b2 = _f32(boxes1), _f32(boxes2)
    _check_boxes(b1, "boxes1")
    _check_boxes(b2, "boxes2")
    return _overlaps(b1, b2, mode, eps)


def _overlaps(b1, b2, mode, eps):
    # Per coordinate rather than on [..., 2] pairs: for anchors x gts the
    # broadcast temporaries are [B, N, A], half the memory of [B, N, A, 2].
    ax1, ay1, ax2, ay2 = (b1[..., i] for i in range(4))
    bx1, by1, bx2, by2 = (b2[..., i] for i in range(4))
    area1 = (ax2 - ax1) * (ay2 - ay1)
    area2 = (bx2 - bx1) * (by2 - by1)
    iw = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    ih = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    overlap = iw * ih
    if mode == "iof":
        union = area1 + tf.zeros_like(overlap)
    else:
        union = area1 + area2 - overlap
    union = tf.maximum(union, eps)
    ious = overlap / union
    if mode != "giou":
        return ious
    ew = tf.maximum(tf.maximum(ax2, bx2) - tf.minimum(ax1, bx1), 0.0)
    eh = tf.maximum(tf.maximum(ay2, by2) - tf.minimum(ay1, by1), 0.0)
    enclose_area = tf.maximum(ew * eh, eps)
    return ious - (enclose_area - union) / enclose_area


def pairwise_iou(boxes1, boxes2):
    """IoU of every pair: [..., N, 4] x [..., M, 4] -> [..., N, M]."""
    return pairwise_overlaps(boxes1, boxes2, "iou")


def pairwise_iof(boxes1, boxes2):
    """Intersection over ``boxes1``'s area of every pair -> [..., N, M]."""
    return pairwise_overlaps(boxes1, boxes2, "iof")


def pairwise_giou(boxes1, boxes2):
    """Generalised IoU (Rezatofighi et al. 2019) of every pair -> [..., N, M]."""
    return pairwise_overlaps(boxes1, boxes2, "giou")


def aligned_iou(boxes1, boxes2):
    """IoU of corresponding boxes [..., 4] x [..., 4] -> [...]."""
    return aligned_overlaps(boxes1, boxes2, "iou")


def aligned_giou(boxes1, boxes2):
    """GIoU of corresponding boxes [..., 4] x [..., 4] -> [...]."""
    return aligned_overlaps(boxes1, boxes2, "giou")


def _image_wh(image_shape, boxes):
    """[..., 2] (h, w) image shapes -> (w, h) tensors shaped to broadcast with
    boxes [..., N, 4]'s coordinates ([..., 1]). A single [2] shape serves all."""
    shape = _f32(image_shape)
    rank = shape.shape.rank
    if rank is not None and (rank < 1 or shape.shape[-1] not in (2, 3, None)):
        raise KdetError(f"image_shape must be [..., 2] (height, width), got {shape.shape}")
    h, w = shape[..., 0], shape[..., 1]
    if shape.shape.rank is not None and shape.shape.rank > 1:
        h, w = h[..., None], w[..., None]  # broadcast over the N boxes
    return w, h


def clip_boxes(boxes, image_shape):
    """Clip xyxy boxes into their image, x to [0, width] and y to [0, height].

    Args:
        boxes: [B, N, 4] (or [N, 4]) xyxy.
        image_shape: [B, 2] per-image (height, width) (or one [2] shape).
    Returns:
        Boxes of the same shape, float32. mmdet clamps to the width/height itself
        (``bbox_clip_border``), not to width - 1.
    """
    boxes = _f32(boxes)
    _check_boxes(boxes, "boxes")
    w, h = _image_wh(image_shape, boxes)
    x1 = tf.clip_by_value(boxes[..., 0], 0.0, w)
    y1 = tf.clip_by_value(boxes[..., 1], 0.0, h)
    x2 = tf.clip_by_value(boxes[..., 2], 0.0, w)
    y2 = tf.clip_by_value(boxes[..., 3], 0.0, h)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def flip_boxes(boxes, image_shape, direction="horizontal"):
    """Mirror xyxy boxes in their image, as mmdet's ``bbox_flip``.

    Args:
        boxes: [B, N, 4] (or [N, 4]) xyxy.
        image_shape: [B, 2] (or [2]) (height, width).
        direction: "horizontal" (x -> width - x), "vertical" or "diagonal" (both).
    Returns:
        Flipped xyxy boxes, same shape.
    """
    if direction not in ("horizontal", "vertical", "diagonal"):
        raise KdetError(
            f"flip direction must be 'horizontal', 'vertical' or 'diagonal', got {direction!r}")
    boxes = _f32(boxes)
    _check_boxes(boxes, "boxes")
    w, h = _image_wh(image_shape, boxes)
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
    if direction in ("horizontal", "diagonal"):
        x1, x2 = w - x2, w - x1
    if direction in ("vertical", "diagonal"):
        y1, y2 = h - y2, h - y1
    return tf.stack([x1, y1, x2, y2], axis=-1)


def convert_format(boxes, source, target, image_shape=None):
    """Convert boxes between formats.

    Formats (last axis of 4):
        "xyxy": x1, y1, x2, y2 in pixels (kdet's internal format);
        "yxyx": y1, x1, y2, x2 in pixels;
        "xywh": x1, y1, width, height in pixels (COCO json);
        "center_xywh": centre x, centre y, width, height in pixels;
        "rel_xyxy": x1, y1, x2, y2 divided by the image width/height.
    Args:
        boxes: [..., N, 4] (any leading axes; [..., 4] when image_shape is [2]).
        source, target: one of the formats above.
        image_shape: (height, width) [2], or [..., 2] matching boxes' leading
            axes; required when either format is relative.
    Returns:
        float32 boxes in ``target`` format, same shape.
    """
    for name, fmt in (("source", source), ("target", target)):
        if fmt not in BOX_FORMATS:
            raise KdetError(f"unknown {name} box format {fmt!r}; expected one of {BOX_FORMATS}")
    boxes = _f32(boxes)
    _check_boxes(boxes, "boxes")
    if source == target:
        return boxes
    if "rel" in (source[:3], target[:3]) and image_shape is None:
        raise KdetError(f"converting {source!r} -> {target!r} needs image_shape (height, width)")
    xyxy = _to_xyxy(boxes, source, image_shape)
    return _from_xyxy(xyxy, target, image_shape)


def _to_xyxy(b, fmt, image_shape):
    a0, a1, a2, a3 = tf.unstack(b, 4, axis=-1)
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return tf.stack([a1, a0, a3, a2], axis=-1)
    if fmt == "xywh":
        return tf.stack([a0, a1, a0 + a2, a1 + a3], axis=-1)
    if fmt == "center_xywh":
        return tf.stack([a0 - 0.5 * a2, a1 - 0.5 * a3, a0 + 0.5 * a2, a1 + 0.5 * a3], axis=-1)
    w, h = _image_wh(image_shape, b)  # rel_xyxy
    return tf.stack([a0 * w, a1 * h, a2 * w, a3 * h], axis=-1)


def _from_xyxy(b, fmt, image_shape):
    x1, y1, x2, y2 = tf.unstack(b, 4, axis=-1)
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return tf.stack([y1, x1, y2, x2], axis=-1)
    if fmt == "xywh":
        return tf.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    if fmt == "center_xywh":
        return tf.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1], axis=-1)
    w, h = _image_wh(image_shape, b)  # rel_xyxy
    return tf.stack([x1 / w, y1 / h, x2 / w, y2 / h], axis=-1)
