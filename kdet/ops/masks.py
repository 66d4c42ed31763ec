"""Pasting box-relative instance masks into full images (MMDetection's ``_do_paste_mask``).

A mask head predicts, for each detection, an ``[mh, mw]`` (28x28 in Mask R-CNN)
probability map covering the detection box. Pasting puts it back into the image:
image pixel ``(y, x)`` has its centre at ``(y + 0.5, x + 0.5)``; its position inside
the mask grid is

    u = (x + 0.5 - x1) / (x2 - x1) * mw - 0.5        (same for v with y, y1, y2, mh)

and its value is the bilinear interpolation of the mask at ``(v, u)``, where mask
cells outside ``[0, mh) x [0, mw)`` count as 0. This is exactly
``torch.nn.functional.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros",
align_corners=False)`` with the normalised grid mmdet builds in ``_do_paste_mask``
(mmdet/models/roi_heads/mask_heads/fcn_mask_head.py). The binary mask is
``value >= threshold`` (``mask_thr_binary=0.5`` in every mmdet Mask R-CNN config).

Bilinear sampling is separable, so each mask is pasted as ``Wy @ mask @ Wx^T`` with
``Wy [H, mh]`` and ``Wx [W, mw]`` interpolation matrices (a row of zeros where the pixel
lies outside the box's reach). That form is the same in numpy and TF, has static
shapes and no gathers (XLA friendly).

Deviation from mmdet: a box with zero or negative width or height pastes an empty
mask (mmdet divides by zero there and gets NaNs/garbage).
"""
import numpy as np

from kdet.errors import KdetError


def _interp_matrix_np(coord, size, border):
    """coord [M, P] float sample positions in cell units -> [M, P, size] weights.

    border=False: cells outside [0, size) weigh 0 (grid_sample padding "zeros").
    border=True: positions are clamped into [0, size-1] (resize with edge replication).
    """
    if border:
        coord = np.clip(coord, 0.0, size - 1.0)
    lo = np.floor(coord)
    frac = (coord - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    cells = np.arange(size)
    w = ((lo[..., None] == cells) * (1.0 - frac)[..., None]
         + ((lo + 1)[..., None] == cells) * frac[..., None])
    return w.astype(np.float32)


def _check(masks, boxes, image_size):
    if masks.ndim != 3:
        raise KdetError(f"paste_masks: masks must be [M, mh, mw], got shape {masks.shape}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != masks.shape[0]:
        raise KdetError(f"paste_masks: boxes must be [M, 4] with M={masks.shape[0]}, "
                        f"got shape {boxes.shape}")
    if len(image_size) != 2 or int(image_size[0]) <= 0 or int(image_size[1]) <= 0:
        raise KdetError(f"paste_masks: image_size must be (height, width) > 0, got {image_size}")


def paste_masks_numpy(masks, boxes, image_size, threshold=0.5):
    """Paste box-relative masks into an image (numpy; mmdet ``_do_paste_mask`` semantics).

    Args:
      masks: [M, mh, mw] float probabilities, each covering its box.
      boxes: [M, 4] float ``xyxy`` in pixels of the target image.
      image_size: (height, width) of the target image.
      threshold: binarise with ``value >= threshold`` (returns uint8 0/1); None returns
        the float32 probabilities.

    Returns:
      [M, H, W] uint8 (threshold given) or float32.
    """
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32)
    _check(masks, boxes, image_size)
    h, w = int(image_size[0]), int(image_size[1])
    m, mh, mw = masks.shape
    if threshold is None:
        out = np.zeros((m, h, w), np.float32)
    else:
        out = np.zeros((m, h, w), np.uint8)
    for i in range(m):
        x1, y1, x2, y2 = boxes[i]  # float32 scalars: same arithmetic as the TF version
        if not (x2 > x1 and y2 > y1):
            continue
        if threshold is None or threshold <= 0:
            ys, xs = np.arange(h), np.arange(w)
        else:
            # With a threshold > 0, only pixels whose centre lies inside the box can be
            # on (outside it, at least half of the bilinear weight falls on zero padding),
            # so compute just that window (+1 px of margin for rounding).
            ys = np.arange(max(int(np.floor(y1 - 0.5)) - 1, 0), min(int(np.ceil(y2)) + 1, h))
            xs = np.arange(max(int(np.floor(x1 - 0.5)) - 1, 0), min(int(np.ceil(x2)) + 1, w))
            if ys.size == 0 or xs.size == 0:
                continue
        v = (ys.astype(np.float32) + 0.5 - y1) / (y2 - y1) * mh - 0.5
        u = (xs.astype(np.float32) + 0.5 - x1) / (x2 - x1) * mw - 0.5
        wy = _interp_matrix_np(v[None], mh, border=False)[0]
        wx = _interp_matrix_np(u[None], mw, border=False)[0]
        val = wy @ masks[i] @ wx.T
        if threshold is None:
            out[i, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = val
        else:
            out[i, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = val >= threshold
    return out


def resize_masks_numpy(masks, image_size, threshold=0.5):
    """Bilinearly resize full-image masks ([M, h, w] -> [M, H, W]), half-pixel centres.

    Same sampling as ``F.interpolate(mode="bilinear", align_corners=False)`` (edges
    replicated). Used for detectors whose masks are already image-sized (network
    input resolution) to bring them to the original image size.
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3:
        raise KdetError(f"resize_masks_numpy: masks must be [M, h, w], got {masks.shape}")
    h, w = int(image_size[0]), int(image_size[1])
    m, mh, mw = masks.shape
    v = (np.arange(h, dtype=np.float32) + 0.5) * (mh / h) - 0.5
    u = (np.arange(w, dtype=np.float32) + 0.5) * (mw / w) - 0.5
    wy = _interp_matrix_np(v[None], mh, border=True)[0]
    wx = _interp_matrix_np(u[None], mw, border=True)[0]
    val = np.einsum("hi,mij,wj->mhw", wy, masks, wx)
    return val.astype(np.float32) if threshold is None else (val >= threshold).astype(np.uint8)


def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Paste box-relative masks into an image (TensorFlow, graph/XLA friendly).

    Args:
      masks: [M, mh, mw] float probabilities (static mh, mw).
      boxes: [M, 4] float ``xyxy`` pixels of the target image.
      image_size: (height, width) Python ints (the output shape is static).
      threshold: ``value >= threshold`` -> uint8 0/1; None returns float32 values.

    Returns:
      [M, H, W] uint8 or float32, identical to :func:`paste_masks_numpy`.
    """
    import tensorflow as tf

    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if masks.shape.rank != 3 or boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise KdetError(f"paste_masks: masks must be [M, mh, mw] and boxes [M, 4], got "
                        f"{masks.shape} and {boxes.shape}")
    if len(image_size) != 2 or int(image_size[0]) <= 0 or int(image_size[1]) <= 0:
        raise KdetError(f"paste_masks: image_size must be (height, width) > 0, got {image_size}")
    h, w = int(image_size[0]), int(image_size[1])
    mh, mw = int(masks.shape[1]), int(masks.shape[2])
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    valid = tf.logical_and(x2 > x1, y2 > y1)
    bw = tf.where(valid, x2 - x1, 1.0)
    bh = tf.where(valid, y2 - y1, 1.0)

    def weights(centres, lo_edge, extent, cells):
        # centres [P] -> per-mask sample positions [M, P] -> interpolation [M, P, cells];
        # tf.one_hot of an out-of-range index is all zeros = grid_sample's zero padding.
        pos = (centres[None, :] - lo_edge[:, None]) / extent[:, None] * cells - 0.5
        lo = tf.floor(pos)
        frac = pos - lo
        lo = tf.cast(lo, tf.int32)
        return (tf.one_hot(lo, cells) * (1.0 - frac)[..., None]
                + tf.one_hot(lo + 1, cells) * frac[..., None])

    wy = weights(tf.range(h, dtype=tf.float32) + 0.5, y1, bh, mh)   # [M, H, mh]
    wx = weights(tf.range(w, dtype=tf.float32) + 0.5, x1, bw, mw)   # [M, W, mw]
    val = tf.matmul(tf.matmul(wy, masks), wx, transpose_b=True)     # [M, H, W]
    val = tf.where(valid[:, None, None], val, 0.0)
    if threshold is None:
        return val
    return tf.cast(val >= threshold, tf.uint8)
