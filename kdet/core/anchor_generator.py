"""Multi-level anchor generator with MMDetection v2 conventions.

Reproduces ``mmdet.core.anchor.AnchorGenerator`` (v2.x) exactly:

* base anchors of a level, for base size ``s`` (default: the stride),
  ``h_ratio = sqrt(ratio)``, ``w_ratio = 1 / h_ratio``, widths
  ``s * w_ratio * scale`` and heights ``s * h_ratio * scale`` (float32, ratio-major
  order when ``scale_major``: for each ratio, every scale), centred on
  ``(center_offset * s, center_offset * s)`` (0 in v2: the anchor centre is the
  top-left corner of its stride cell, *not* the cell centre);
* grid order: location-major, row-major over (y, x), then the A base anchors, so
  anchor ``(y * W + x) * A + a`` is base anchor ``a`` shifted by
  ``(x * stride_w, y * stride_h)``;
* valid flags: a location is valid when it lies inside
  ``ceil(valid_h / stride_h) x ceil(valid_w / stride_w)``.

Sizes may be Python ints (static) or scalar tensors (dynamic); the result is a
tf float32 tensor either way, computed with the same float32 arithmetic order as
mmdet so that anchors match bit for bit.
"""
import numpy as np
import tensorflow as tf

from kdet.errors import KdetError


def _pair(v):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise KdetError(f"a stride must be an int or a (w, h) pair, got {v!r}")
        return (v[0], v[1])
    return (v, v)


class AnchorGenerator:
    """Anchor boxes for every location of every feature level.

    Args:
        strides: stride of each level in input pixels, an int or a (w, h) pair.
            RPN / Faster / Mask R-CNN (mmdet configs): (4, 8, 16, 32, 64);
            RetinaNet: (8, 16, 32, 64, 128).
        ratios: height / width ratios. (0.5, 1.0, 2.0) in both configs.
        scales: anchor scales relative to the base size, e.g. (8,) for RPN; leave
            None when giving ``octave_base_scale`` + ``scales_per_octave``.
        base_sizes: base size per level; default min(stride) of each level.
        scale_major: order of the A base anchors: True (mmdet v2 default) is
            ratio-major (for each ratio, all scales); False is scale-major.
        octave_base_scale, scales_per_octave: RetinaNet-style scales
            ``octave_base_scale * 2 ** (i / scales_per_octave)``, i < scales_per_octave
            (RetinaNet: 4 and 3).
        centers: optional explicit (x, y) centre of the base anchors per level.
        center_offset: centre as a fraction of the base size, in [0, 1]; 0 in v2.
    """

    def __init__(self, strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), scales=(8,),
                 base_sizes=None, scale_major=True, octave_base_scale=None,
                 scales_per_octave=None, centers=None, center_offset=0.0):
        if not strides:
            raise KdetError("AnchorGenerator needs at least one stride")
        if not 0.0 <= center_offset <= 1.0:
            raise KdetError(f"center_offset must be in [0, 1], got {center_offset}")
        if center_offset != 0 and centers is not None:
            raise KdetError("give either centers or a non-zero center_offset, not both")
        octave = octave_base_scale is not None or scales_per_octave is not None
        if octave:
            if octave_base_scale is None or scales_per_octave is None:
                raise KdetError("octave_base_scale and scales_per_octave must be given together")
            if scales is not None and tuple(scales) != (8,):
                raise KdetError("give either scales or octave_base_scale + scales_per_octave")
            scales = [octave_base_scale * 2 ** (i / scales_per_octave)
                      for i in range(int(scales_per_octave))]
        elif scales is None:
            raise KdetError("AnchorGenerator needs scales or octave_base_scale + scales_per_octave")
        if not ratios or not scales:
            raise KdetError("ratios and scales must not be empty")
        if any(r <= 0 for r in ratios) or any(s <= 0 for s in scales):
            raise KdetError(f"ratios and scales must be positive, got {ratios} and {scales}")
        self.strides = [_pair(s) for s in strides]
        if base_sizes is None:
            base_sizes = [min(s) for s in self.strides]
        if len(base_sizes) != len(self.strides):
            raise KdetError(
                f"got {len(base_sizes)} base_sizes for {len(self.strides)} strides")
        if centers is not None and len(centers) != len(self.strides):
            raise KdetError(f"got {len(centers)} centers for {len(self.strides)} strides")
        self.base_sizes = list(base_sizes)
        self.ratios = [float(r) for r in ratios]
        self.scales = [float(s) for s in scales]
        self.scale_major = bool(scale_major)
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.centers = None if centers is None else [tuple(c) for c in centers]
        self.center_offset = float(center_offset)
        self.base_anchors = [
            self._level_base_anchors(size, None if centers is None else self.centers[i])
            for i, size in enumerate(self.base_sizes)]

    # ------------------------------------------------------------------ base anchors
    def _level_base_anchors(self, base_size, center):
        """[A, 4] float32 numpy base anchors of one level (mmdet's
        ``gen_single_level_base_anchors``, same float32 operation order)."""
        f32 = np.float32
        w = h = f32(base_size)
        if center is None:
            x_c, y_c = f32(self.center_offset) * w, f32(self.center_offset) * h
        else:
            x_c, y_c = f32(center[0]), f32(center[1])
        ratios = np.asarray(self.ratios, f32)
        scales = np.asarray(self.scales, f32)
        h_ratios = np.sqrt(ratios)
        w_ratios = f32(1) / h_ratios
        if self.scale_major:
            ws = (w * w_ratios[:, None] * scales[None, :]).reshape(-1)
            hs = (h * h_ratios[:, None] * scales[None, :]).reshape(-1)
        else:
            ws = (w * scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (h * scales[:, None] * h_ratios[None, :]).reshape(-1)
        half = f32(0.5)
        return np.stack([x_c - half * ws, y_c - half * hs,
                         x_c + half * ws, y_c + half * hs], axis=-1).astype(f32)

    @property
    def num_levels(self):
        """Number of feature levels."""
        return len(self.strides)

    @property
    def num_base_anchors(self):
        """list[int]: anchors per location (A) of each level."""
        return [int(b.shape[0]) for b in self.base_anchors]

    # ------------------------------------------------------------------ grids
    def _check_sizes(self, featmap_sizes):
        if len(featmap_sizes) != self.num_levels:
            raise KdetError(f"got {len(featmap_sizes)} feature-map sizes for "
                            f"{self.num_levels} anchor levels")

    def single_level_anchors(self, featmap_size, level):
        """Anchors of one level.

        Args:
            featmap_size: (H, W) of the level's feature map (ints or scalar tensors).
            level: level index.
        Returns:
            [H * W * A, 4] float32 xyxy, location-major (row-major), then anchors.
        """
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        base = tf.constant(self.base_anchors[level])  # [A, 4]
        # mmdet: integer arange * stride, then cast to the anchors' float32.
        shift_x = tf.cast(tf.range(feat_w) * int(stride_w), tf.float32)
        shift_y = tf.cast(tf.range(feat_h) * int(stride_h), tf.float32)
        sy, sx = tf.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W]
        sx, sy = tf.reshape(sx, [-1]), tf.reshape(sy, [-1])
        shifts = tf.stack([sx, sy, sx, sy], axis=-1)  # [H*W, 4]
        return tf.reshape(shifts[:, None, :] + base[None, :, :], [-1, 4])

    def grid_anchors(self, featmap_sizes):
        """Per-level anchors: list of [H_l * W_l * A_l, 4] float32 xyxy."""
        self._check_sizes(featmap_sizes)
        return [self.single_level_anchors(s, i) for i, s in enumerate(featmap_sizes)]

    def __call__(self, featmap_sizes):
        """All levels' anchors concatenated: [sum_l H_l * W_l * A_l, 4] float32."""
        return tf.concat(self.grid_anchors(featmap_sizes), axis=0)

    def num_anchors_per_level(self, featmap_sizes):
        """list[int]: H_l * W_l * A_l for static (int) feature-map sizes."""
        self._check_sizes(featmap_sizes)
        return [int(h) * int(w) * a for (h, w), a in zip(featmap_sizes, self.num_base_anchors)]

    # ------------------------------------------------------------------ validity
    def single_level_valid_flags(self, featmap_size, valid_shapes, level):
        """Valid flags of one level's anchors.

        Args:
            featmap_size: (H, W) of the level.
            valid_shapes: [B, 2] (height, width) in input pixels of each image's
                real (not batch-padded) area; mmdet passes ``img_meta['pad_shape']``.
            level: level index.
        Returns:
            [B, H * W * A] bool, in the anchors' order.
        """
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        shapes = tf.cast(tf.convert_to_tensor(valid_shapes), tf.float32)
        if shapes.shape.rank != 2 or shapes.shape[-1] not in (2, None):
            raise KdetError(f"valid_shapes must be [B, 2] (height, width), got {shapes.shape}")
        valid_h = tf.math.ceil(shapes[:, 0] / float(stride_h))  # [B]
        valid_w = tf.math.ceil(shapes[:, 1] / float(stride_w))
        ys = tf.cast(tf.range(feat_h), tf.float32)
        xs = tf.cast(tf.range(feat_w), tf.float32)
        ok_y = ys[None, :] < valid_h[:, None]  # [B, H]
        ok_x = xs[None, :] < valid_w[:, None]  # [B, W]
        ok = tf.logical_and(ok_y[:, :, None], ok_x[:, None, :])  # [B, H, W]
        num_a = self.num_base_anchors[level]
        ok = tf.broadcast_to(ok[..., None], tf.concat([tf.shape(ok), [num_a]], 0))
        return tf.reshape(ok, [tf.shape(shapes)[0], -1])

    def valid_flags(self, featmap_sizes, valid_shapes):
        """All levels' valid flags concatenated: [B, sum_l H_l * W_l * A_l] bool."""
        self._check_sizes(featmap_sizes)
        return tf.concat([self.single_level_valid_flags(s, valid_shapes, i)
                          for i, s in enumerate(featmap_sizes)], axis=1)

    # ------------------------------------------------------------------ config
    def get_config(self):
        """Constructor arguments (JSON-serialisable)."""
        octave = self.octave_base_scale is not None
        return {
            "strides": [list(s) if s[0] != s[1] else s[0] for s in self.strides],
            "ratios": list(self.ratios),
            "scales": None if octave else list(self.scales),
            "base_sizes": list(self.base_sizes),
            "scale_major": self.scale_major,
            "octave_base_scale": self.octave_base_scale,
            "scales_per_octave": self.scales_per_octave,
            "centers": None if self.centers is None else [list(c) for c in self.centers],
            "center_offset": self.center_offset,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


def anchor_inside_flags(anchors, valid_flags, image_shapes, allowed_border=0):
    """Anchors usable for training, as mmdet's ``anchor_inside_flags``.

    Args:
        anchors: [A, 4] or [B, A, 4] xyxy.
        valid_flags: [B, A] bool from :meth:`AnchorGenerator.valid_flags`.
        image_shapes: [B, 2] (height, width) of the resized, un-padded images
            (mmdet's ``img_meta['img_shape']``).
        allowed_border: pixels an anchor may stick out of the image; negative
            means no check (mmdet's RPN / RetinaNet / ATSS configs use -1).
    Returns:
        [B, A] bool.
    """
    valid_flags = tf.convert_to_tensor(valid_flags, tf.bool)
    if allowed_border < 0:
        return valid_flags
    anchors = tf.cast(anchors, tf.float32)
    if anchors.shape.rank == 2:
        anchors = anchors[None]
    shapes = tf.cast(image_shapes, tf.float32)
    h, w = shapes[:, 0:1], shapes[:, 1:2]  # [B, 1]
    b = float(allowed_border)
    inside = ((anchors[..., 0] >= -b) & (anchors[..., 1] >= -b)
              & (anchors[..., 2] < w + b) & (anchors[..., 3] < h + b))
    return valid_flags & inside

