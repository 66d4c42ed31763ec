"""``TwoStageDetector``: backbone -> FPN -> RPN -> RoI heads (MMDetection v2
``TwoStageDetector``), the common body of :class:`FasterRCNN` and :class:`MaskRCNN`.

The model class only wires the stages; losses and post-processing live in the heads
(:class:`kdet.heads.RPNHead`, :class:`kdet.heads.StandardRoIHead`). Configuration mirrors
mmdet's ``train_cfg`` / ``test_cfg`` dicts; defaults are ``mask_rcnn_r50_fpn.py``'s.
"""
import copy

import keras
import tensorflow as tf

from kdet.backbones.registry import build_backbone
from kdet.errors import KdetError
from kdet.utils.config import jsonable
from kdet.heads.dense.rpn_head import RPN_TEST_CFG, RPN_TRAIN_PROPOSAL_CFG, RPNHead
from kdet.heads.roi.bbox_head import RCNN_TEST_CFG
from kdet.heads.roi.standard_roi_head import RCNN_ASSIGNER, RCNN_SAMPLER, StandardRoIHead
from kdet.models.base import Detector, check_ground_truth
from kdet.necks import FPN

# mmdet v2 configs/_base_/models/{faster,mask}_rcnn_r50_fpn.py, and the RegNet configs'
# backbone (configs/regnet/mask_rcnn_regnetx-3.2GF_fpn_1x_coco.py): frozen_stages=1,
# norm_eval=True, style='pytorch', out_indices=(0, 1, 2, 3).
DEFAULT_BACKBONE_KWARGS = dict(out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                               style="pytorch")
DEFAULT_NECK = dict(out_channels=256, num_outs=5)
DEFAULT_TRAIN_CFG = dict(
    rpn=dict(assigner=dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                           match_low_quality=True, ignore_iof_thr=-1.0),
             sampler=dict(num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
             allowed_border=-1),
    rpn_proposal=dict(RPN_TRAIN_PROPOSAL_CFG),
    rcnn=dict(assigner=dict(RCNN_ASSIGNER), sampler=dict(RCNN_SAMPLER)))
DEFAULT_TEST_CFG = dict(rpn=dict(RPN_TEST_CFG), rcnn=dict(RCNN_TEST_CFG))


def merge_cfg(base, override, where="cfg"):
    """Deep merge of ``override`` into a copy of ``base``; unknown keys raise KdetError."""
    out = copy.deepcopy(base)
    for key, value in dict(override or {}).items():
        if key not in out:
            raise KdetError(f"unknown {where} key {key!r}; valid: {sorted(out)}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_cfg(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


@keras.saving.register_keras_serializable(package="kdet")
class TwoStageDetector(Detector):
    """Two-stage detector with an FPN, an RPN and a :class:`StandardRoIHead`.

    Args:
        backbone: backbone name (``"regnetx_3.2gf"``, ``"resnet50"``, ...) or config dict.
        num_classes: foreground classes (COCO 80).
        backbone_kwargs: options merged over ``DEFAULT_BACKBONE_KWARGS`` (frozen_stages=1,
            norm_eval=True, style="pytorch").
        neck: FPN options (``out_channels`` 256, ``num_outs`` 5, ...); in_channels come from
            the backbone.
        rpn_head: extra :class:`RPNHead` kwargs (``feat_channels``, ``anchor_generator``, ...).
        roi_head: extra :class:`StandardRoIHead` kwargs (``fc_out_channels``,
            ``mask_conv_channels``, ...).
        train_cfg: mmdet-style overrides of ``DEFAULT_TRAIN_CFG``: ``rpn.assigner``,
            ``rpn.sampler``, ``rpn.allowed_border``, ``rpn_proposal`` (nms_pre, max_per_img,
            iou_threshold, min_bbox_size), ``rcnn.assigner``, ``rcnn.sampler``.
        test_cfg: overrides of ``DEFAULT_TEST_CFG``: ``rpn`` (nms_pre 1000, max_per_img 1000,
            iou_threshold 0.7, min_bbox_size 0), ``rcnn`` (score_thr 0.05, iou_threshold 0.5,
            max_per_img 100, mask_thr_binary 0.5).
        preprocessing: see :func:`kdet.models.base.default_preprocessing`.
    Call:
        ``model(images)`` with normalised, padded ``[B, H, W, 3]`` images (and optionally
        ``img_shape=[B, 2]`` valid sizes to clip to) -> the padded detections dict of
        :class:`kdet.models.base.Detector` (``max_per_img`` = 100 rows).
    """

    loss_names = ("rpn_cls", "rpn_bbox", "cls", "bbox")
    torch_heads = ("rpn_head", "roi_head")
    with_mask = False
    _default_train_cfg = DEFAULT_TRAIN_CFG

    def __init__(self, backbone="regnetx_3.2gf", num_classes=80, backbone_kwargs=None,
                 neck=None, rpn_head=None, roi_head=None, train_cfg=None, test_cfg=None,
                 preprocessing=None, name=None, **kwargs):
        super().__init__(num_classes, preprocessing=preprocessing, name=name, **kwargs)
        # -- configuration
        if not isinstance(backbone, (str, dict)):
            raise KdetError(f"backbone must be a name or a config dict, got "
                            f"{type(backbone).__name__}")
        self.backbone_cfg = copy.deepcopy(backbone)
        self.backbone_kwargs = dict(DEFAULT_BACKBONE_KWARGS, **dict(backbone_kwargs or {}))
        self.neck_cfg = dict(DEFAULT_NECK, **dict(neck or {}))
        self.rpn_head_cfg = dict(rpn_head or {})
        self.roi_head_cfg = dict(roi_head or {})
        self.train_cfg = merge_cfg(self._default_train_cfg, train_cfg, "train_cfg")
        self.test_cfg = merge_cfg(DEFAULT_TEST_CFG, test_cfg, "test_cfg")
        # -- layers
        self.backbone = build_backbone(backbone, **self.backbone_kwargs)
        self.neck = FPN(in_channels=self.backbone.out_channels, name="neck", **self.neck_cfg)
        ch = self.neck.out_channels
        rpn = self.train_cfg["rpn"]
        self.rpn_head = RPNHead(
            in_channels=ch, assigner=dict(type="MaxIoUAssigner", **rpn["assigner"]),
            sampler=rpn["sampler"], allowed_border=rpn["allowed_border"],
            train_proposal_cfg=self.train_cfg["rpn_proposal"], test_cfg=self.test_cfg["rpn"],
            name="rpn_head", **self.rpn_head_cfg)
        strides = self.neck.output_strides(self.backbone.out_strides)
        roi_kwargs = dict(featmap_strides=strides[:4], **self.roi_head_cfg)
        self.roi_head = StandardRoIHead(
            self.num_classes, in_channels=ch, with_mask=self.with_mask,
            assigner=self.train_cfg["rcnn"]["assigner"], sampler=self.train_cfg["rcnn"]["sampler"],
            test_cfg=self.test_cfg["rcnn"], name="roi_head", **roi_kwargs)
        # -- build every weight now (shapes are known), so save / load need no dummy call
        self.neck.build([(None, None, None, c) for c in self.backbone.out_channels])
        self.rpn_head.build([(None, None, None, ch)])
        self.roi_head.build()
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    # -- forward -------------------------------------------------------------------------
    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise KdetError(f"{type(self).__name__} expects normalised images [B, H, W, 3] (NHWC),"
                            f" got shape {tuple(images.shape)}")
        return tf.cast(images, tf.float32)

    def extract_feat(self, images, training=False):
        """images [B, H, W, 3] -> FPN levels P2..P6 (list of NHWC maps)."""
        return self.neck(self.backbone(images, training=training))

    @staticmethod
    def _full_shape(images):
        b = tf.shape(images)[0]
        hw = tf.cast(tf.shape(images)[1:3], tf.float32)
        return tf.tile(hw[None], [b, 1])

    def call(self, images, training=False, img_shape=None):
        images = self._check_images(images)
        feats = self.extract_feat(images, training=False)
        img_shape = self._full_shape(images) if img_shape is None else tf.cast(img_shape,
                                                                               tf.float32)
        rpn_outs = self.rpn_head(feats)
        proposals, _, valid = self.rpn_head.get_proposals(rpn_outs, img_shape, training=False)
        return self.roi_head.predict(feats, proposals, valid, img_shape)

    # -- losses --------------------------------------------------------------------------
    def _sample_seed(self, salt):
        """Stateless sampling seed [2] from the optimizer step and the replica id (so
        MirroredStrategy replicas draw differently); None before ``compile``."""
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return None
        step = tf.cast(optimizer.iterations, tf.int32)
        ctx = tf.distribute.get_replica_context()
        rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32) if ctx is not None else 0
        return tf.stack([step, rid * 7919 + int(salt)])

    def compute_losses(self, images, gt, training=True):
        """{"rpn_cls", "rpn_bbox", "cls", "bbox"[, "mask"]} (mmdet's loss_rpn_cls, ...)."""
        images = self._check_images(images)
        gt = check_ground_truth(gt, with_masks=self.with_mask)
        feats = self.extract_feat(images, training=training)
        img_shape = (tf.cast(gt["img_shape"], tf.float32) if "img_shape" in gt
                     else self._full_shape(images))
        rpn_outs = self.rpn_head(feats)
        rpn_gt = dict(gt, sample_seed=self._sample_seed(11))
        if rpn_gt["sample_seed"] is None:
            rpn_gt.pop("sample_seed")
        rpn_losses = self.rpn_head.loss(rpn_outs, rpn_gt, img_shape)
        proposals, _, valid = self.rpn_head.get_proposals(rpn_outs, img_shape, training=True)
        image_size = (images.shape[1], images.shape[2])
        roi_losses = self.roi_head.loss(feats, proposals, valid, gt, image_size,
                                        seed=self._sample_seed(23))
        losses = {"rpn_cls": rpn_losses["loss_rpn_cls"], "rpn_bbox": rpn_losses["loss_rpn_bbox"],
                  "cls": roi_losses["loss_cls"], "bbox": roi_losses["loss_bbox"]}
        if self.with_mask:
            losses["mask"] = roi_losses["loss_mask"]
        return losses

    # -- config --------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({"backbone": copy.deepcopy(self.backbone_cfg),
                       "backbone_kwargs": dict(self.backbone_kwargs),
                       "neck": dict(self.neck_cfg), "rpn_head": dict(self.rpn_head_cfg),
                       "roi_head": dict(self.roi_head_cfg),
                       "train_cfg": copy.deepcopy(self.train_cfg),
                       "test_cfg": copy.deepcopy(self.test_cfg)})
        return jsonable(config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)
