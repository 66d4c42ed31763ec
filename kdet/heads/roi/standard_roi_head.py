"""``StandardRoIHead``: the second stage of Faster / Mask R-CNN (MMDetection v2
``StandardRoIHead``, mmdet/models/roi_heads/standard_roi_head.py).

Training (:meth:`loss`): the RPN proposals are assigned to the ground truth (MaxIoU 0.5 /
0.5 / 0.5), the gt boxes prepended as proposals and 512 RoIs sampled per image (25%
positives, RandomSampler); the box head classifies and regresses their 7x7 RoIAlign features;
the mask head segments the positives' 14x14 features against 28x28 crops of the gt masks.
Inference (:meth:`predict`): box head on the test proposals, per-class NMS, then the mask head
on the kept detections. Everything is batched and padded (static shapes).
"""
import keras
import tensorflow as tf

from kdet.core import MaxIoUAssigner, RandomSampler
from kdet.errors import KdetError
from kdet.heads.dense.base import build_object, object_config
from kdet.heads.roi.bbox_head import RCNN_TEST_CFG, Shared2FCBBoxHead
from kdet.heads.roi.mask_head import FCNMaskHead
from kdet.heads.roi.roi_extractor import SingleRoIExtractor, boxes_to_rois

# mmdet v2 faster_rcnn_r50_fpn.py train_cfg.rcnn (mask_rcnn_r50_fpn.py: match_low_quality True).
RCNN_ASSIGNER = dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False,
                     ignore_iof_thr=-1.0)
RCNN_SAMPLER = dict(num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True)


@keras.saving.register_keras_serializable(package="kdet")
class StandardRoIHead(keras.layers.Layer):
    """Box (and optional mask) branch over RoIs.

    Args:
        num_classes: foreground classes.
        in_channels: FPN channels (256).
        featmap_strides: levels RoIs are pooled from ([4, 8, 16, 32]).
        fc_out_channels: box-head FC width (1024).
        with_mask: add the FCN mask head (Mask R-CNN).
        mask_conv_channels: mask-head conv width (256).
        bbox_roi_size, mask_roi_size: RoIAlign output sides (7, 14).
        assigner: :class:`kdet.core.MaxIoUAssigner` or kwargs (default ``RCNN_ASSIGNER``).
        sampler: :class:`kdet.core.RandomSampler` or kwargs (default ``RCNN_SAMPLER``).
        test_cfg: ``score_thr`` 0.05, ``iou_threshold`` 0.5, ``max_per_img`` 100,
            ``mask_thr_binary`` 0.5 (the evaluator binarises with it).
        bbox_head, mask_head: extra kwargs of the heads.
    """

    def __init__(self, num_classes, in_channels=256, featmap_strides=(4, 8, 16, 32),
                 fc_out_channels=1024, with_mask=False, mask_conv_channels=256,
                 bbox_roi_size=7, mask_roi_size=14, assigner=None, sampler=None, test_cfg=None,
                 bbox_head=None, mask_head=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.with_mask = bool(with_mask)
        cfg = dict(RCNN_TEST_CFG)
        for key, value in dict(test_cfg or {}).items():
            if key == "nms" and isinstance(value, dict):
                cfg["iou_threshold"] = value.get("iou_threshold", cfg["iou_threshold"])
            elif key not in cfg:
                raise KdetError(f"unknown rcnn test option {key!r}; valid: {sorted(cfg)}")
            else:
                cfg[key] = value
        self.test_cfg = cfg
        self.assigner = build_object(assigner or RCNN_ASSIGNER, MaxIoUAssigner)
        self.sampler = build_object(sampler or RCNN_SAMPLER, RandomSampler)
        self.sampler_seed_generator = self.sampler.seed_generator  # tracked by Keras
        self.bbox_roi_extractor = SingleRoIExtractor(bbox_roi_size, self.featmap_strides)
        self._bbox_head_kwargs = dict(bbox_head or {})
        self.bbox_head = Shared2FCBBoxHead(
            self.num_classes, in_channels=self.in_channels, roi_feat_size=bbox_roi_size,
            fc_out_channels=fc_out_channels, name="bbox_head", dtype=self.dtype_policy,
            **self._bbox_head_kwargs)
        self._mask_head_kwargs = dict(mask_head or {})
        self.mask_roi_extractor = None
        self.mask_head = None
        if self.with_mask:
            self.mask_roi_extractor = SingleRoIExtractor(mask_roi_size, self.featmap_strides)
            self.mask_head = FCNMaskHead(
                self.num_classes, in_channels=self.in_channels,
                conv_out_channels=mask_conv_channels, roi_feat_size=mask_roi_size,
                name="mask_head", dtype=self.dtype_policy, **self._mask_head_kwargs)
        self._config = dict(fc_out_channels=int(fc_out_channels),
                            mask_conv_channels=int(mask_conv_channels),
                            bbox_roi_size=int(bbox_roi_size), mask_roi_size=int(mask_roi_size))

    def build(self, input_shape=None):
        self.bbox_head.build()
        if self.with_mask:
            self.mask_head.build()
        self.built = True

    def call(self, features, proposals, proposals_valid, img_shape):
        return self.predict(features, proposals, proposals_valid, img_shape)

    def torch_state_map(self, prefix="roi_head"):
        """mmdet ``StandardRoIHead``: ``{prefix}.bbox_head.*`` and ``{prefix}.mask_head.*`` (the
        RoI extractors have no weights)."""
        out = self.bbox_head.torch_state_map(f"{prefix}.bbox_head")
        if self.with_mask:
            out.update(self.mask_head.torch_state_map(f"{prefix}.mask_head"))
        return out

    # -- training ------------------------------------------------------------------------
    def sample(self, proposals, proposals_valid, gt, seed=None):
        """Assign + sample: :class:`kdet.core.SamplingResult` with [B, num] fields."""
        result = self.assigner.assign(proposals, gt["boxes"], gt["labels"], gt.get("ignore"),
                                      box_valid=proposals_valid)
        return self.sampler.sample(result, proposals, gt["boxes"], gt["labels"], gt.get("ignore"),
                                   seed=seed)

    def loss(self, features, proposals, proposals_valid, gt, image_size, seed=None):
        """{"loss_cls", "loss_bbox"[, "loss_mask"]} for one (per-replica) batch.

        Args:
            features: FPN levels (the first ``len(featmap_strides)`` are used).
            proposals: [B, P, 4]; proposals_valid: [B, P] bool.
            gt: padded ground truth (``masks`` [B, N, H, W] for Mask R-CNN).
            image_size: (H, W) of the padded network input.
            seed: optional [2] int32 seed of a stateless sampling draw.
        """
        sampling = self.sample(tf.stop_gradient(proposals), proposals_valid, gt, seed)
        rois = boxes_to_rois(tf.stop_gradient(sampling.boxes))
        cls_logits, deltas = self.bbox_head(self.bbox_roi_extractor(features, rois))
        targets = self.bbox_head.get_targets(sampling, gt["boxes"])
        losses = self.bbox_head.loss(cls_logits, deltas, targets)
        if self.with_mask:
            if "masks" not in gt:
                raise KdetError("Mask R-CNN needs gt['masks'] [B, N, H, W] (use with_masks=True "
                                "in kdet.data.coco_dataset)")
            # Positives fill the first slots of a sampling result (at most num_expected_pos).
            p = max(self.sampler.num_expected_pos, 1)
            pos_boxes = tf.stop_gradient(sampling.boxes[:, :p])
            pos_valid = sampling.is_pos[:, :p]
            pos_labels = tf.maximum(sampling.labels[:, :p], 0)
            pos_gt = tf.maximum(sampling.gt_inds[:, :p] - 1, 0)
            mask_feats = self.mask_roi_extractor(features, boxes_to_rois(pos_boxes))
            mask_logits = self.mask_head(mask_feats)
            mask_targets = tf.stop_gradient(self.mask_head.get_targets(
                pos_boxes, pos_gt, gt["masks"], image_size))
            m = self.mask_head.mask_size
            losses.update(self.mask_head.loss(
                mask_logits, tf.reshape(mask_targets, [-1, m, m]), tf.reshape(pos_labels, [-1]),
                tf.reshape(tf.cast(pos_valid, tf.float32), [-1])))
        return losses

    # -- inference -----------------------------------------------------------------------
    def predict(self, features, proposals, proposals_valid, img_shape):
        """Padded detections: boxes [B, M, 4], scores [B, M], labels [B, M] (-1 pad),
        num_detections [B], and masks [B, M, 28, 28] (probabilities) with a mask head."""
        cls_logits, deltas = self.bbox_head(
            self.bbox_roi_extractor(features, boxes_to_rois(proposals)))
        dets = self.bbox_head.predict(proposals, proposals_valid, cls_logits, deltas, img_shape,
                                      {k: self.test_cfg[k] for k in
                                       ("score_thr", "iou_threshold", "max_per_img")})
        if self.with_mask:
            boxes = dets["boxes"]
            b = boxes.shape[0] if boxes.shape[0] is not None else tf.shape(boxes)[0]
            m = boxes.shape[1]
            logits = self.mask_head(self.mask_roi_extractor(features, boxes_to_rois(boxes)))
            probs = self.mask_head.predict(logits, tf.reshape(dets["labels"], [-1]))
            s = self.mask_head.mask_size
            probs = tf.reshape(probs, [b, m, s, s])
            dets["masks"] = tf.where((dets["labels"] >= 0)[:, :, None, None], probs, 0.0)
        return dets

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "in_channels": self.in_channels,
                       "featmap_strides": list(self.featmap_strides),
                       "with_mask": self.with_mask, **self._config,
                       "assigner": object_config(self.assigner),
                       "sampler": object_config(self.sampler), "test_cfg": dict(self.test_cfg),
                       "bbox_head": dict(self._bbox_head_kwargs),
                       "mask_head": dict(self._mask_head_kwargs)})
        return config
