"""``RPNHead``: the region proposal network of Faster / Mask R-CNN (MMDetection v2
``RPNHead``, mmdet/models/dense_heads/rpn_head.py), on :class:`AnchorHead`.

Per level: ``rpn_conv`` (3x3, ``feat_channels``, ReLU), then ``rpn_cls`` (1x1, A sigmoid
objectness logits) and ``rpn_reg`` (1x1, 4A deltas), shared across the FPN levels. Defaults
are those of mmdet's ``mask_rcnn_r50_fpn.py`` / ``faster_rcnn_r50_fpn.py``:

* anchors: strides (4, 8, 16, 32, 64), scales (8,), ratios (0.5, 1, 2);
* targets: MaxIoU 0.7 / 0.3, min_pos_iou 0.3, ``match_low_quality``; RandomSampler 256
  anchors, 50% positives, ``neg_pos_ub`` -1, no gt proposals; ``allowed_border`` -1;
* losses: sigmoid CE (weight 1) and L1 on deltas (weight 1), both divided by the sampled
  anchors ``sum_i max(num_pos_i, 1) + sum_i max(num_neg_i, 1)`` (mmdet ``num_total_samples``);
* proposals (:meth:`get_proposals`): per level the ``nms_pre`` best anchors, decoded and
  clipped, boxes not larger than ``min_bbox_size`` dropped, NMS 0.7 *per level* (mmdet's
  ``batched_nms`` with the level as the class), the ``max_per_img`` best kept. Train:
  nms_pre 2000, test: 1000; max_per_img 1000 both. Output is padded to a static
  ``[B, max_per_img, 4]`` with a validity mask.
"""
import keras
import tensorflow as tf

from kdet.core import RandomSampler
from kdet.errors import KdetError
from kdet.heads.dense.anchor_head import AnchorHead
from kdet.heads.dense.base import (
    build_object, featmap_sizes, flatten_level, multiclass_nms, object_config,
)
from kdet.layers.torch_layout import layer_params

# mmdet v2 configs/_base_/models/mask_rcnn_r50_fpn.py: train_cfg.rpn_proposal / test_cfg.rpn.
RPN_TRAIN_PROPOSAL_CFG = dict(nms_pre=2000, max_per_img=1000, iou_threshold=0.7, min_bbox_size=0)
RPN_TEST_CFG = dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, min_bbox_size=0)


def _merge_proposal_cfg(base, override):
    cfg = dict(base)
    for key, value in dict(override or {}).items():
        if key == "nms" and isinstance(value, dict):  # mmdet style nms=dict(iou_threshold=)
            cfg["iou_threshold"] = value.get("iou_threshold", cfg["iou_threshold"])
        elif key not in base:
            raise KdetError(f"unknown RPN proposal option {key!r}; valid: {sorted(base)}")
        else:
            cfg[key] = value
    if int(cfg["nms_pre"]) < 1 or int(cfg["max_per_img"]) < 1:
        raise KdetError(f"RPN nms_pre and max_per_img must be >= 1, got {cfg}")
    return cfg


@keras.saving.register_keras_serializable(package="kdet")
class RPNHead(AnchorHead):
    """Region proposal head.

    Args:
        in_channels: channels of the FPN levels (256).
        feat_channels: channels of ``rpn_conv`` (256).
        anchor_generator, bbox_coder, assigner, loss_cls, loss_bbox: as :class:`AnchorHead`;
            defaults are mmdet's RPN ones (see the module docstring).
        sampler: :class:`kdet.core.RandomSampler` or its kwargs (num 256, pos_fraction 0.5).
        train_proposal_cfg: ``nms_pre``, ``max_per_img``, ``iou_threshold``,
            ``min_bbox_size`` of the proposals fed to the R-CNN stage in training.
        test_cfg: the same keys for inference.
    Call:
        features: list of L NHWC maps -> ``{"cls_scores": [[B, H_l, W_l, A]],
        "bbox_preds": [[B, H_l, W_l, 4A]]}``.
    """

    def __init__(self, in_channels=256, feat_channels=256, anchor_generator=None,
                 bbox_coder=None, assigner=None, sampler=None, loss_cls=None, loss_bbox=None,
                 allowed_border=-1, train_proposal_cfg=None, test_cfg=None, num_classes=1,
                 **kwargs):
        if int(num_classes) != 1:
            raise KdetError(f"RPNHead predicts one objectness class, got num_classes={num_classes}")
        rpn_test = _merge_proposal_cfg(RPN_TEST_CFG, test_cfg)
        super().__init__(
            1, in_channels=in_channels, feat_channels=feat_channels,
            anchor_generator=anchor_generator or dict(strides=(4, 8, 16, 32, 64),
                                                      ratios=(0.5, 1.0, 2.0), scales=(8,)),
            bbox_coder=bbox_coder or dict(target_means=(0.0,) * 4, target_stds=(1.0,) * 4),
            assigner=assigner or dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                                      min_pos_iou=0.3, match_low_quality=True,
                                      ignore_iof_thr=-1.0),
            loss_cls=loss_cls or dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=loss_bbox or dict(type="L1Loss", loss_weight=1.0),
            allowed_border=allowed_border,
            test_cfg=dict(nms_pre=rpn_test["nms_pre"], score_thr=-1.0,
                          iou_threshold=rpn_test["iou_threshold"],
                          max_per_img=rpn_test["max_per_img"]),
            **kwargs)
        self.rpn_test_cfg = rpn_test
        self.train_proposal_cfg = _merge_proposal_cfg(RPN_TRAIN_PROPOSAL_CFG, train_proposal_cfg)
        self.sampler = build_object(
            sampler or dict(num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
            RandomSampler)
        if self.sampler.add_gt_as_proposals:
            raise KdetError("the RPN sampler cannot add gt boxes as proposals (anchors are fixed)")
        self.sampler_seed_generator = self.sampler.seed_generator  # tracked by Keras

    # -- layers --------------------------------------------------------------------------
    def _init_layers(self):
        """mmdet RPNHead: ``rpn_conv`` / ``rpn_cls`` / ``rpn_reg``, all normal(0, 0.01)."""
        init = keras.initializers.RandomNormal(stddev=0.01)
        a = self.num_base_priors
        self.rpn_conv = keras.layers.Conv2D(self.feat_channels, 3, padding="same",
                                            kernel_initializer=init, name="rpn_conv",
                                            dtype=self.dtype_policy)
        self.conv_cls = keras.layers.Conv2D(a * self.cls_out_channels, 1, kernel_initializer=init,
                                            name="rpn_cls", dtype=self.dtype_policy)
        self.conv_reg = keras.layers.Conv2D(a * 4, 1, kernel_initializer=init, name="rpn_reg",
                                            dtype=self.dtype_policy)

    def _build_layers(self, shape):
        self.rpn_conv.build(shape)
        hidden = tuple(shape[:-1]) + (self.feat_channels,)
        self.conv_cls.build(hidden)
        self.conv_reg.build(hidden)

    def forward_single(self, x, level, training=None):
        x = tf.nn.relu(self.rpn_conv(x))
        return {"cls_scores": self.conv_cls(x), "bbox_preds": self.conv_reg(x)}

    def torch_state_map(self, prefix="rpn_head"):
        """mmdet ``RPNHead``: ``{prefix}.rpn_conv|rpn_cls|rpn_reg.{weight,bias}`` (A sigmoid
        objectness channels, 4A deltas, anchor-major as :meth:`AnchorHead.torch_state_map`)."""
        return {**layer_params(self.rpn_conv, f"{prefix}.rpn_conv"),
                **super().torch_state_map(prefix)}

    # -- targets / loss ------------------------------------------------------------------
    def sample(self, assign_result, anchors, gt):
        """RandomSampler (256, 0.5); ``gt["sample_seed"]`` ([2] int) makes it stateless."""
        result = self.sampler.sample(assign_result, seed=gt.get("sample_seed"))
        return result.dense_masks(tf.shape(assign_result.gt_inds)[1])

    def loss_avg_factor(self, targets):
        """mmdet ``num_total_samples`` with sampling: per image max(#pos, 1) + max(#neg, 1)."""
        pos = tf.reduce_sum(tf.cast(targets.pos_mask, tf.float32), axis=1)
        sampled = tf.reduce_sum(tf.cast(targets.label_weights > 0, tf.float32), axis=1)
        return tf.reduce_sum(tf.maximum(pos, 1.0) + tf.maximum(sampled - pos, 1.0))

    def loss(self, outputs, gt, img_shape=None):
        """{"loss_rpn_cls", "loss_rpn_bbox"}: see the module docstring. Every real object
        is of the single class 0 (objectness)."""
        gt = dict(gt)
        gt["labels"] = tf.where(tf.cast(gt["labels"], tf.int32) >= 0, 0, -1)
        losses = super().loss(outputs, gt, img_shape)
        return {"loss_rpn_cls": losses["loss_cls"], "loss_rpn_bbox": losses["loss_bbox"]}

    # -- proposals -----------------------------------------------------------------------
    def get_proposals(self, outputs, img_shape, training=False):
        """Static-shape proposals.

        Args:
            outputs: the dict returned by :meth:`call`.
            img_shape: [B, 2] valid (h, w) per image (proposals are clipped to it).
            training: use ``train_proposal_cfg`` (else the test cfg).
        Returns:
            (proposals [B, P, 4] float32 xyxy (zeros in padding), scores [B, P],
            valid [B, P] bool), ``P = max_per_img``, sorted by descending objectness.
            Gradients are stopped (mmdet detaches the proposals).
        """
        cfg = self.train_proposal_cfg if training else self.rpn_test_cfg
        img_shape = tf.cast(img_shape, tf.float32)
        sizes = featmap_sizes(outputs["cls_scores"])
        levels = self.anchor_generator.grid_anchors(sizes)
        boxes, scores, ids = [], [], []
        for lvl, anchors in enumerate(levels):
            logits = flatten_level(tf.stop_gradient(outputs["cls_scores"][lvl]), 1)[..., 0]
            deltas = flatten_level(tf.stop_gradient(outputs["bbox_preds"][lvl]), 4)
            n = logits.shape[1]
            if n is None:  # unknown feature size (e.g. predict on any image size): pad the
                # level to nms_pre candidates, the padding marked invalid (static output)
                k = int(cfg["nms_pre"])
                n_dyn = tf.shape(logits)[1]
                padded = tf.pad(logits, [[0, 0], [0, tf.maximum(k - n_dyn, 0)]],
                                constant_values=-1e9)
                top, idx = tf.math.top_k(tf.sigmoid(padded), k=k)
                real = idx < n_dyn
                idx = tf.minimum(idx, n_dyn - 1)
            else:
                k = min(int(cfg["nms_pre"]), int(n))
                top, idx = tf.math.top_k(tf.sigmoid(logits), k=k)
                real = tf.ones_like(idx, tf.bool)
            decoded = self.bbox_coder.decode(tf.gather(anchors, idx),
                                             tf.gather(deltas, idx, batch_dims=1),
                                             max_shape=img_shape)
            boxes.append(decoded)
            scores.append(top)
            ids.append(tf.where(real, lvl, -1))
        boxes = tf.concat(boxes, 1)
        scores = tf.concat(scores, 1)
        ids = tf.concat(ids, 1)
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        min_size = float(cfg["min_bbox_size"])
        ok = (w > min_size) & (h > min_size) & (ids >= 0)  # mmdet v2 _bbox_post_process
        labels = tf.where(ok, 0, -1)
        dets, _ = multiclass_nms(boxes, scores, labels, float(cfg["iou_threshold"]),
                                 int(cfg["max_per_img"]), groups=tf.maximum(ids, 0))
        valid = dets["labels"] >= 0
        return dets["boxes"], dets["scores"], valid

    def predict(self, outputs, img_shape=None, input_shape=None):
        """Test proposals as a padded detections dict (label 0 = object)."""
        img_shape = self.resolve_img_shape(outputs, img_shape, input_shape)
        boxes, scores, valid = self.get_proposals(outputs, img_shape, training=False)
        return {"boxes": boxes, "scores": scores, "labels": tf.where(valid, 0, -1),
                "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)}

    def get_config(self):
        config = super().get_config()
        for key in ("num_classes", "pos_weight", "reg_decoded_bbox"):
            config.pop(key, None)
        config.update({"sampler": object_config(self.sampler),
                       "train_proposal_cfg": dict(self.train_proposal_cfg),
                       "test_cfg": dict(self.rpn_test_cfg)})
        return config
