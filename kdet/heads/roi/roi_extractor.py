"""``SingleRoIExtractor``: RoIAlign features of each RoI from the one FPN level its size picks
(MMDetection v2 ``SingleRoIExtractor``, mmdet/models/roi_heads/roi_extractors/).

Level rule (Lin et al., FPN paper eq. 1 as mmdet writes it, ``finest_scale`` 56)::

    scale = sqrt(w * h);  level = floor(log2(scale / finest_scale + 1e-6)), clamped to [0, L-1]

so RoIs smaller than 112 px go to P2 (stride 4), < 224 px to P3, < 448 px to P4, the rest P5.

Static shapes: every level runs RoIAlign over all K RoIs, the RoIs of other levels replaced by
empty boxes (zero samples, zero output, no gradient), and the per-level results are summed
under the level mask. The custom kernel's cost follows the real samples, so the empty boxes
are nearly free; under XLA the pure-TF twin is used (``kdet.ops.roi_align`` dispatches).
"""
import math

import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops import roi_align


def map_roi_levels(boxes, num_levels, finest_scale=56):
    """Level of each RoI. boxes: [..., 4] xyxy -> [...] int32 in [0, num_levels - 1]."""
    boxes = tf.cast(boxes, tf.float32)
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0)
    scale = tf.sqrt(area)
    lvl = tf.floor(tf.math.log(scale / float(finest_scale) + 1e-6) / math.log(2.0))
    return tf.cast(tf.clip_by_value(lvl, 0.0, float(num_levels - 1)), tf.int32)


class SingleRoIExtractor:
    """Multi-level RoIAlign.

    Args:
        output_size: 7 for the box head, 14 for the mask head (mmdet).
        featmap_strides: strides of the levels used (mmdet: [4, 8, 16, 32], P2-P5).
        sampling_ratio: 0 = adaptive ``ceil(roi_size / output_size)`` (mmdet v2 configs).
        aligned: RoIAlign ``aligned=True`` (half-pixel shift; mmdet v2 configs).
        finest_scale: the level rule's scale (56).
    Call:
        ``extractor(features, rois)``: features list of >= L NHWC maps (the first L are
        used), rois [K, 5] ``(batch_index, x1, y1, x2, y2)`` in input pixels ->
        [K, output_size, output_size, C] float32.
    """

    def __init__(self, output_size=7, featmap_strides=(4, 8, 16, 32), sampling_ratio=0,
                 aligned=True, finest_scale=56):
        if int(output_size) < 1:
            raise KdetError(f"RoI output_size must be >= 1, got {output_size}")
        if not featmap_strides:
            raise KdetError("SingleRoIExtractor needs at least one featmap stride")
        self.output_size = int(output_size)
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.finest_scale = float(finest_scale)

    @property
    def num_levels(self):
        return len(self.featmap_strides)

    def __call__(self, features, rois):
        if len(features) < self.num_levels:
            raise KdetError(f"SingleRoIExtractor needs {self.num_levels} feature levels, got "
                            f"{len(features)}")
        rois = tf.cast(rois, tf.float32)
        levels = map_roi_levels(rois[:, 1:], self.num_levels, self.finest_scale)
        empty = tf.concat([rois[:, :1], tf.zeros_like(rois[:, 1:])], axis=1)
        out = None
        for i, stride in enumerate(self.featmap_strides):
            sel = tf.equal(levels, i)
            level_rois = tf.where(sel[:, None], rois, empty)
            feats = roi_align(features[i], level_rois, self.output_size,
                              spatial_scale=1.0 / stride, sampling_ratio=self.sampling_ratio,
                              aligned=self.aligned)
            feats = tf.where(sel[:, None, None, None], tf.cast(feats, tf.float32), 0.0)
            out = feats if out is None else out + feats
        return out

    def get_config(self):
        return {"output_size": self.output_size, "featmap_strides": list(self.featmap_strides),
                "sampling_ratio": self.sampling_ratio, "aligned": self.aligned,
                "finest_scale": self.finest_scale}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def boxes_to_rois(boxes):
    """[B, K, 4] per-image boxes -> [B * K, 5] rois (batch_index, x1, y1, x2, y2)."""
    boxes = tf.cast(boxes, tf.float32)
    b = tf.shape(boxes)[0]
    k = tf.shape(boxes)[1]
    idx = tf.cast(tf.repeat(tf.range(b), k), tf.float32)[:, None]
    return tf.concat([idx, tf.reshape(boxes, [-1, 4])], axis=1)
