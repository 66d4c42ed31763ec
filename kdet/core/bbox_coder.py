"""DeltaXYWHBBoxCoder: R-CNN box regression deltas, as MMDetection v2's
``bbox2delta`` / ``delta2bbox`` (continuous coordinates, no +1).

Deltas are ``(dx, dy, dw, dh) = ((gx - px) / pw, (gy - py) / ph, log(gw / pw),
log(gh / ph))``, then normalised by ``(delta - means) / stds``.
"""
import numpy as np
import tensorflow as tf

from kdet.errors import KdetError

# Widths/heights are floored at this value before division / log, so that
# degenerate (zero-area) boxes -- e.g. the zero padding of a ground-truth batch
# gathered for negative anchors -- give finite deltas instead of inf/NaN (which
# would turn a zero-weighted loss into NaN). Real boxes are >= 1 px, unaffected.
_MIN_SIZE = 1e-6


class DeltaXYWHBBoxCoder:
    """Encode boxes as deltas from reference boxes (anchors / proposals) and back.

    Args:
        target_means: (4,) means subtracted from the deltas. mmdet: zeros.
        target_stds: (4,) stds dividing the deltas. RPN / RetinaNet configs use
            (1, 1, 1, 1); the R-CNN box head (0.1, 0.1, 0.2, 0.2) (cascade
            stages 2 and 3: (0.05, 0.05, 0.1, 0.1) and (0.033, 0.033, 0.067, 0.067)).
        clip_border: clip decoded boxes to ``max_shape`` when one is given.
        add_ctr_clamp: clamp the centre shift to +-``ctr_clamp`` pixels (YOLOF).
        ctr_clamp: the centre clamp in pixels.
    """

    def __init__(self, target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(1.0, 1.0, 1.0, 1.0),
                 clip_border=True, add_ctr_clamp=False, ctr_clamp=32):
        if len(target_means) != 4 or len(target_stds) != 4:
            raise KdetError(f"target_means and target_stds need 4 values each, got "
                            f"{target_means} and {target_stds}")
        if any(s <= 0 for s in target_stds):
            raise KdetError(f"target_stds must be positive, got {target_stds}")
        self.target_means = tuple(float(m) for m in target_means)
        self.target_stds = tuple(float(s) for s in target_stds)
        self.clip_border = bool(clip_border)
        self.add_ctr_clamp = bool(add_ctr_clamp)
        self.ctr_clamp = float(ctr_clamp)

    def encode(self, boxes, gt_boxes):
        """Deltas that move ``boxes`` onto ``gt_boxes``.

        Args:
            boxes: [..., 4] xyxy reference boxes (anchors / proposals).
            gt_boxes: [..., 4] xyxy targets (broadcast against ``boxes``).
        Returns:
            [..., 4] float32 normalised deltas (dx, dy, dw, dh).
        """
        p = tf.cast(boxes, tf.float32)
        g = tf.cast(gt_boxes, tf.float32)
        px = (p[..., 0] + p[..., 2]) * 0.5
        py = (p[..., 1] + p[..., 3]) * 0.5
        pw = tf.maximum(p[..., 2] - p[..., 0], _MIN_SIZE)
        ph = tf.maximum(p[..., 3] - p[..., 1], _MIN_SIZE)
        gx = (g[..., 0] + g[..., 2]) * 0.5
        gy = (g[..., 1] + g[..., 3]) * 0.5
        gw = tf.maximum(g[..., 2] - g[..., 0], _MIN_SIZE)
        gh = tf.maximum(g[..., 3] - g[..., 1], _MIN_SIZE)
        deltas = tf.stack([(gx - px) / pw, (gy - py) / ph,
                           tf.math.log(gw / pw), tf.math.log(gh / ph)], axis=-1)
        means = tf.constant(self.target_means, tf.float32)
        stds = tf.constant(self.target_stds, tf.float32)
        return (deltas - means) / stds

    def decode(self, boxes, deltas, max_shape=None, wh_ratio_clip=16 / 1000):
        """Apply deltas to reference boxes.

        Args:
            boxes: [..., N, 4] xyxy reference boxes.
            deltas: [..., N, 4 * K] normalised deltas (K = 1, or one box per class
                for class-specific heads), leading axes as ``boxes``.
            max_shape: optional (height, width) to clip to when ``clip_border``:
                a [2] shape for all, or [..., 2] per image (e.g. [B, 2] for [B, N, 4k]).
            wh_ratio_clip: |dw|, |dh| are clamped to |log(wh_ratio_clip)| (4.135),
                mmdet's guard against exp overflow.
        Returns:
            [..., N, 4 * K] float32 xyxy boxes.
        """
        deltas = tf.cast(deltas, tf.float32)
        boxes = tf.cast(boxes, tf.float32)
        if deltas.shape[-1] is not None and deltas.shape[-1] % 4:
            raise KdetError(f"deltas' last axis must be a multiple of 4, got {deltas.shape}")
        k = (deltas.shape[-1] or 4) // 4
        d = tf.reshape(deltas, tf.concat([tf.shape(deltas)[:-1], [k, 4]], 0))  # [..., N, K, 4]
        d = tf.ensure_shape(d, deltas.shape[:-1].concatenate([k, 4]))
        d = d * tf.constant(self.target_stds) + tf.constant(self.target_means)
        dx, dy, dw, dh = tf.unstack(d, 4, axis=-1)  # [..., N, K]
        px = ((boxes[..., 0] + boxes[..., 2]) * 0.5)[..., None]
        py = ((boxes[..., 1] + boxes[..., 3]) * 0.5)[..., None]
        pw = (boxes[..., 2] - boxes[..., 0])[..., None]
        ph = (boxes[..., 3] - boxes[..., 1])[..., None]
        dx_w, dy_h = pw * dx, ph * dy
        max_ratio = float(np.abs(np.log(wh_ratio_clip)))
        if self.add_ctr_clamp:
            dx_w = tf.clip_by_value(dx_w, -self.ctr_clamp, self.ctr_clamp)
            dy_h = tf.clip_by_value(dy_h, -self.ctr_clamp, self.ctr_clamp)
            dw = tf.minimum(dw, max_ratio)
            dh = tf.minimum(dh, max_ratio)
        else:
            dw = tf.clip_by_value(dw, -max_ratio, max_ratio)
            dh = tf.clip_by_value(dh, -max_ratio, max_ratio)
        gw = pw * tf.exp(dw)
        gh = ph * tf.exp(dh)
        gx = px + dx_w
        gy = py + dy_h
        x1, y1 = gx - gw * 0.5, gy - gh * 0.5
        x2, y2 = gx + gw * 0.5, gy + gh * 0.5
        if self.clip_border and max_shape is not None:
            shape = tf.cast(tf.convert_to_tensor(max_shape), tf.float32)
            h, w = shape[..., 0], shape[..., 1]
            if shape.shape.rank > 1:  # per image: [..., 2] -> [..., 1, 1]
                h, w = h[..., None, None], w[..., None, None]
            x1 = tf.clip_by_value(x1, 0.0, w)
            x2 = tf.clip_by_value(x2, 0.0, w)
            y1 = tf.clip_by_value(y1, 0.0, h)
            y2 = tf.clip_by_value(y2, 0.0, h)
        out = tf.stack([x1, y1, x2, y2], axis=-1)  # [..., N, K, 4]
        return tf.ensure_shape(tf.reshape(out, tf.shape(deltas)), deltas.shape)

    def get_config(self):
        return {"target_means": list(self.target_means), "target_stds": list(self.target_stds),
                "clip_border": self.clip_border, "add_ctr_clamp": self.add_ctr_clamp,
                "ctr_clamp": self.ctr_clamp}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
