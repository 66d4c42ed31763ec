"""``AnchorHead``: the anchor-based dense head (MMDetection v2 ``AnchorHead``), base of the
RPN, RetinaNet, ATSS and PAA heads.

Default forward: one 1x1 conv for classification (``conv_cls``, A * C channels) and one for
regression (``conv_reg``, A * 4), as mmdet's ``AnchorHead``. Targets: an assigner (MaxIoU by
default) and an optional sampler hook; loss: ``loss_cls`` over every valid anchor and
``loss_bbox`` over positives, both normalised by the number of positives (mmdet v2:
``sum_i max(num_pos_i, 1)``, per replica -- DDP averages the gradients).

Hooks beyond :class:`BaseDenseHead`'s: :meth:`assign`, :meth:`sample`,
:meth:`loss_avg_factor`, :meth:`level_scores`.
"""
from typing import NamedTuple

import keras
import tensorflow as tf

from kdet.core import AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner, anchor_inside_flags
from kdet.core.atss_assigner import ATSSAssigner
from kdet.errors import KdetError
from kdet.heads.dense.base import (
    BaseDenseHead, build_object, featmap_sizes, flatten_level, flatten_levels, object_config,
    topk_pairs,
)
from kdet.layers.torch_layout import layer_params
from kdet.losses import CrossEntropyLoss, FocalLoss, GIoULoss, L1Loss, SmoothL1Loss
from kdet.losses.iou_loss import IoULoss

_LOSSES = {c.__name__: c for c in (CrossEntropyLoss, FocalLoss, GIoULoss, IoULoss, L1Loss,
                                   SmoothL1Loss)}
_ASSIGNERS = {c.__name__: c for c in (MaxIoUAssigner, ATSSAssigner)}


def build_loss(cfg):
    """A kdet loss object from an instance or ``dict(type="FocalLoss", ...)``."""
    if cfg is None or not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in _LOSSES:
        raise KdetError(f"loss type must be one of {sorted(_LOSSES)}, got {kind!r}")
    return _LOSSES[kind](**cfg)


def loss_config(loss):
    return None if loss is None else {"type": type(loss).__name__, **loss.get_config()}


def build_assigner(cfg):
    """An assigner from an instance or ``dict(type="MaxIoUAssigner", ...)``."""
    if cfg is None or not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    kind = cfg.pop("type", "MaxIoUAssigner")
    if kind not in _ASSIGNERS:
        raise KdetError(f"assigner type must be one of {sorted(_ASSIGNERS)}, got {kind!r}")
    return _ASSIGNERS[kind](**cfg)


def assigner_config(assigner):
    return None if assigner is None else {"type": type(assigner).__name__,
                                          **assigner.get_config()}


class Anchors(NamedTuple):
    """Anchors of a batch: ``anchors [A, 4]`` (shared by the batch), ``valid [B, A]`` bool,
    ``num_level_anchors`` list[int] (static; sums to A), ``level_ids [A]`` int32."""
    anchors: tf.Tensor
    valid: tf.Tensor
    num_level_anchors: list
    level_ids: tf.Tensor


class DenseTargets(NamedTuple):
    """Per-anchor training targets, batched and padded.

    labels [B, A] int32 (class id, ``num_classes`` = background); label_weights [B, A] float32
    (0 for ignored / invalid anchors); bbox_targets [B, A, 4] (deltas, or gt boxes when
    ``reg_decoded_bbox``); bbox_weights [B, A] float32 (1 for positives); pos_mask [B, A];
    gt_inds [B, A] int32 (assigner's: -1 ignored, 0 negative, k >= 1 gt slot k-1);
    gt_boxes [B, A, 4] the matched gt box of each anchor (slot 0's box for non-positives).
    """
    labels: tf.Tensor
    label_weights: tf.Tensor
    bbox_targets: tf.Tensor
    bbox_weights: tf.Tensor
    pos_mask: tf.Tensor
    gt_inds: tf.Tensor
    gt_boxes: tf.Tensor


@keras.saving.register_keras_serializable(package="kdet")
class AnchorHead(BaseDenseHead):
    """Anchor-based dense head.

    Args:
        num_classes: foreground classes.
        in_channels: channels of every input level (FPN: 256).
        feat_channels: channels of the hidden convs of subclasses (256).
        anchor_generator: :class:`kdet.core.AnchorGenerator` or its kwargs.
        bbox_coder: :class:`kdet.core.DeltaXYWHBBoxCoder` or its kwargs.
        assigner: an assigner or ``dict(type=..., ...)`` (default MaxIoU 0.5 / 0.4 / 0, RetinaNet).
        loss_cls, loss_bbox: kdet losses or ``dict(type=..., ...)`` (default focal and L1).
        reg_decoded_bbox: regress decoded boxes (IoU-type losses) instead of deltas.
        allowed_border: training anchors may stick out of the image by this many pixels;
            negative disables the check (mmdet single-stage configs: -1).
        pos_weight: classification weight of positives; <= 0 means 1 (mmdet: -1).
        test_cfg: see :class:`BaseDenseHead`.
    """

    def __init__(self, num_classes, in_channels=256, feat_channels=256, anchor_generator=None,
                 bbox_coder=None, assigner=None, loss_cls=None, loss_bbox=None,
                 reg_decoded_bbox=False, allowed_border=-1, pos_weight=-1.0, test_cfg=None,
                 **kwargs):
        super().__init__(num_classes, test_cfg=test_cfg, **kwargs)
        self.in_channels = int(in_channels)
        self.feat_channels = int(feat_channels)
        self.anchor_generator = build_object(
            anchor_generator or dict(strides=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0),
                                     scales=None, octave_base_scale=4, scales_per_octave=3),
            AnchorGenerator)
        self.bbox_coder = build_object(bbox_coder or {}, DeltaXYWHBBoxCoder)
        self.assigner = build_assigner(
            assigner or dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4,
                             min_pos_iou=0.0))
        self.loss_cls = build_loss(loss_cls or dict(type="FocalLoss", gamma=2.0, alpha=0.25))
        self.loss_bbox = build_loss(loss_bbox or dict(type="L1Loss"))
        self.reg_decoded_bbox = bool(reg_decoded_bbox)
        self.allowed_border = float(allowed_border)
        self.pos_weight = float(pos_weight)
        self.use_sigmoid_cls = getattr(self.loss_cls, "use_sigmoid", True)
        # mmdet: sigmoid heads predict C channels, softmax heads C + 1 (background last).
        self.cls_out_channels = self.num_classes if self.use_sigmoid_cls else self.num_classes + 1
        self.num_base_priors = self.anchor_generator.num_base_anchors[0]
        if len(set(self.anchor_generator.num_base_anchors)) != 1:
            raise KdetError("every level must have the same number of base anchors")
        self._init_layers()

    # -- layers --------------------------------------------------------------------------
    def _init_layers(self):
        """mmdet AnchorHead: 1x1 ``conv_cls`` and ``conv_reg``, normal(0, 0.01) init."""
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv_cls = keras.layers.Conv2D(self.num_base_priors * self.cls_out_channels, 1,
                                            kernel_initializer=init, name="conv_cls",
                                            dtype=self.dtype_policy)
        self.conv_reg = keras.layers.Conv2D(self.num_base_priors * 4, 1, kernel_initializer=init,
                                            name="conv_reg", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = tuple(input_shape[0]) if isinstance(input_shape[0], (list, tuple)) else (
            None, None, None, self.in_channels)
        self._build_layers(shape)
        self.built = True

    def _build_layers(self, shape):
        """Builds the sublayers for inputs of ``shape`` (NHWC). Subclasses extend."""
        self.conv_cls.build(shape)
        self.conv_reg.build(shape)

    def forward_single(self, x, level, training=None):
        return {"cls_scores": self.conv_cls(x), "bbox_preds": self.conv_reg(x)}

    def torch_state_map(self, prefix="bbox_head"):
        """{mmdet key: variable} of the prediction convs (``{prefix}.conv_cls.*`` etc.: the
        layer names are mmdet's attribute names, e.g. ``retina_cls`` / ``rpn_reg``).

        No channel permutation: mmdet orders a level's output channels anchor-major
        (``channel = anchor * C + class``, ``anchor * 4 + coord``; read back with
        ``permute(0, 2, 3, 1).reshape(B, -1, C)``), and so does kdet (:func:`flatten_level`
        reshapes NHWC ``[B, H, W, A*C]`` to ``[B, H*W*A, C]``); the A base anchors of a
        location are in the same order as MMDetection's ``AnchorGenerator`` (``scale_major``:
        ratio-major, scales inner), checked in tests/convert/test_mmdet_detectors.py.
        """
        out = {}
        for layer in (self.conv_cls, self.conv_reg):
            out.update(layer_params(layer, f"{prefix}.{layer.name}"))
        return out

    # -- anchors -------------------------------------------------------------------------
    def get_anchors(self, sizes, img_shape):
        """:class:`Anchors` for feature maps of ``sizes`` [(H_l, W_l)] and images [B, 2]."""
        levels = self.anchor_generator.grid_anchors(sizes)
        anchors = tf.concat(levels, axis=0)
        valid = self.anchor_generator.valid_flags(sizes, img_shape)
        try:
            num_level = self.anchor_generator.num_anchors_per_level(sizes)
        except TypeError:  # dynamic sizes (inference only)
            num_level = None
        level_ids = tf.concat([tf.fill([tf.shape(a)[0]], i) for i, a in enumerate(levels)], 0)
        return Anchors(anchors, valid, num_level, level_ids)

    # -- targets -------------------------------------------------------------------------
    def assign(self, anchors, inside, gt):
        """Hook: :class:`kdet.core.AssignResult` [B, A] for the anchors (MaxIoU by default)."""
        if isinstance(self.assigner, ATSSAssigner):
            return self.assigner.assign(anchors.anchors, anchors.num_level_anchors, gt["boxes"],
                                        gt["labels"], gt.get("ignore"), anchor_valid=inside)
        return self.assigner.assign(anchors.anchors, gt["boxes"], gt["labels"], gt.get("ignore"),
                                    box_valid=inside)

    def sample(self, assign_result, anchors, gt):
        """Hook: (pos_mask, neg_mask) [B, A] bool. Default: mmdet's PseudoSampler (all)."""
        return assign_result.pos_mask, assign_result.neg_mask

    def get_targets(self, anchors, gt, img_shape):
        """Per-anchor targets (:class:`DenseTargets`) from padded ground truth.

        Args:
            anchors: :class:`Anchors`. gt: padded ground-truth dict. img_shape: [B, 2].
        """
        inside = anchor_inside_flags(anchors.anchors, anchors.valid, img_shape,
                                     self.allowed_border)
        result = self.assign(anchors, inside, gt)
        pos, neg = self.sample(result, anchors, gt)
        pos = pos & inside
        neg = neg & inside & ~pos
        labels = tf.where(pos, result.labels, self.num_classes)
        pos_f = tf.cast(pos, tf.float32)
        pw = self.pos_weight if self.pos_weight > 0 else 1.0
        label_weights = pos_f * pw + tf.cast(neg, tf.float32)
        gt_boxes = result.gather_gt(tf.cast(gt["boxes"], tf.float32))  # [B, A, 4]
        if self.reg_decoded_bbox:
            bbox_targets = gt_boxes
        else:
            bbox_targets = self.bbox_coder.encode(anchors.anchors[None], gt_boxes)
        bbox_targets = tf.where(pos[..., None], bbox_targets, 0.0)
        return DenseTargets(labels, label_weights, bbox_targets, pos_f, pos, result.gt_inds,
                            gt_boxes)

    # -- loss ----------------------------------------------------------------------------
    def loss(self, outputs, gt, img_shape=None):
        sizes = featmap_sizes(outputs["cls_scores"])
        if img_shape is None:
            stride = self.anchor_generator.strides[0]
            h = tf.shape(outputs["cls_scores"][0])[1] * stride[1]
            w = tf.shape(outputs["cls_scores"][0])[2] * stride[0]
            b = tf.shape(outputs["cls_scores"][0])[0]
            img_shape = tf.tile(tf.cast(tf.stack([h, w])[None], tf.float32), [b, 1])
        img_shape = tf.cast(img_shape, tf.float32)
        anchors = self.get_anchors(sizes, img_shape)
        if anchors.num_level_anchors is None:
            raise KdetError("training needs static feature-map sizes (fixed-size padded batches)")
        targets = self.get_targets(anchors, gt, img_shape)
        return self.loss_by_feat(outputs, targets, anchors, gt)

    def loss_avg_factor(self, targets):
        """Hook: the normaliser of both losses. mmdet v2 AnchorHead without sampling:
        ``sum over images of max(num_pos_i, 1)`` (local to the replica)."""
        per_image = tf.reduce_sum(tf.cast(targets.pos_mask, tf.float32), axis=1)
        return tf.reduce_sum(tf.maximum(per_image, 1.0))

    def loss_by_feat(self, outputs, targets, anchors, gt):
        """{"loss_cls", "loss_bbox"}: classification over weighted anchors, regression over
        positives, both / :meth:`loss_avg_factor`."""
        cls = flatten_levels(outputs["cls_scores"], self.cls_out_channels)  # [B, A, C]
        reg = flatten_levels(outputs["bbox_preds"], 4)  # [B, A, 4]
        avg = tf.stop_gradient(self.loss_avg_factor(targets))
        loss_cls = self.loss_cls(cls, targets.labels, targets.label_weights, avg_factor=avg)
        if self.reg_decoded_bbox:
            reg = self.bbox_coder.decode(anchors.anchors[None], reg)
        loss_bbox = self.loss_bbox(reg, targets.bbox_targets,
                                   targets.bbox_weights[..., None] * tf.ones_like(reg),
                                   avg_factor=avg)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # -- inference -----------------------------------------------------------------------
    def level_scores(self, outputs, level):
        """Hook: class probabilities of one level, [B, H*W*A, C] (sigmoid, or softmax
        without the background column)."""
        logits = flatten_level(outputs["cls_scores"][level], self.cls_out_channels)
        if self.use_sigmoid_cls:
            return tf.sigmoid(logits)
        return tf.nn.softmax(logits, axis=-1)[..., :self.num_classes]

    def get_candidates(self, outputs, img_shape):
        """mmdet v2 ``_get_bboxes_single``: per level, the ``nms_pre`` best (anchor, class)
        pairs above ``score_thr``, decoded and clipped to ``img_shape``.

        Returns ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]`` (-1 below the
        threshold), ``level_ids [B, K]`` and ``anchor_idx [B, K]`` (index into all levels'
        flattened anchors, for gathering per-anchor extras such as ATSS's centerness).
        """
        sizes = featmap_sizes(outputs["cls_scores"])
        levels = self.anchor_generator.grid_anchors(sizes)
        boxes, scores, labels, groups, anchor_idx = [], [], [], [], []
        offset = 0
        for lvl, anchors in enumerate(levels):
            probs = self.level_scores(outputs, lvl)
            deltas = flatten_level(outputs["bbox_preds"][lvl], 4)
            s, idx, lab = topk_pairs(probs, int(self.test_cfg["nms_pre"]),
                                     float(self.test_cfg["score_thr"]))
            sel_anchors = tf.gather(anchors, idx)  # [B, k, 4]
            sel_deltas = tf.gather(deltas, idx, batch_dims=1)
            boxes.append(self.bbox_coder.decode(sel_anchors, sel_deltas, max_shape=img_shape))
            scores.append(s)
            labels.append(lab)
            groups.append(tf.fill(tf.shape(lab), lvl))
            anchor_idx.append(idx + offset)
            offset = offset + tf.shape(anchors)[0]
        return {"boxes": tf.concat(boxes, 1), "scores": tf.concat(scores, 1),
                "labels": tf.concat(labels, 1), "level_ids": tf.concat(groups, 1),
                "anchor_idx": tf.concat(anchor_idx, 1)}

    # -- config --------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({
            "in_channels": self.in_channels, "feat_channels": self.feat_channels,
            "anchor_generator": object_config(self.anchor_generator),
            "bbox_coder": object_config(self.bbox_coder),
            "assigner": assigner_config(self.assigner),
            "loss_cls": loss_config(self.loss_cls), "loss_bbox": loss_config(self.loss_bbox),
            "reg_decoded_bbox": self.reg_decoded_bbox, "allowed_border": self.allowed_border,
            "pos_weight": self.pos_weight})
        return config
