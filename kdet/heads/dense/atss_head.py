"""``ATSSHead`` (Zhang et al., CVPR 2020, arXiv:1912.02424), MMDetection v2's ``ATSSHead``.

RetinaHead's towers with GroupNorm(32), one square anchor per location (octave_base_scale 8,
scales_per_octave 1, ratio 1), a learnable per-level ``Scale`` on the regression output, a
centerness branch (``atss_centerness``), adaptive training sample selection
(:class:`kdet.core.ATSSAssigner`, topk 9), GIoU on decoded boxes weighted by the centerness
target, and centerness BCE. Defaults are configs/atss/atss_r50_fpn_1x_coco.py.

Loss normalisation (mmdet v2 ``ATSSHead.loss``): classification and centerness by
``max(reduce_mean(num_pos), 1)``, GIoU by ``max(reduce_mean(sum of centerness targets), 1)``
-- both averaged over replicas (:func:`kdet.ops.distributed.normalize_by_positives`).
At test time the class scores are filtered on their own (``score_thr``) and multiplied by
sigmoid(centerness) before NMS (0.6).
"""
import keras
import tensorflow as tf

from kdet.heads.dense.base import flatten_levels
from kdet.heads.dense.retina_head import RetinaHead
from kdet.layers.torch_layout import layer_params
from kdet.ops.distributed import normalize_by_positives

# configs/atss/atss_r50_fpn_1x_coco.py
ATSS_ANCHORS = dict(strides=(8, 16, 32, 64, 128), ratios=(1.0,), scales=None,
                    octave_base_scale=8, scales_per_octave=1)
ATSS_CODER = dict(target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(0.1, 0.1, 0.2, 0.2))
ATSS_TEST_CFG = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.6, max_per_img=100)


@keras.saving.register_keras_serializable(package="kdet")
class Scale(keras.layers.Layer):
    """Multiplies its input by a learnable scalar (mmcv ``Scale``, init 1.0)."""

    def __init__(self, init=1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.init),
                                     name="scale")

    def call(self, x):
        return x * tf.cast(self.scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init": self.init}


def centerness_target(anchors, gt_boxes):
    """ATSS centerness of anchor centres in their gt boxes: sqrt(min(l,r)/max(l,r) *
    min(t,b)/max(t,b)). anchors, gt_boxes: [..., 4] -> [...] (0 where undefined)."""
    cx = (anchors[..., 0] + anchors[..., 2]) / 2.0
    cy = (anchors[..., 1] + anchors[..., 3]) / 2.0
    l, t = cx - gt_boxes[..., 0], cy - gt_boxes[..., 1]
    r, b = gt_boxes[..., 2] - cx, gt_boxes[..., 3] - cy
    lr = tf.math.divide_no_nan(tf.minimum(l, r), tf.maximum(l, r))
    tb = tf.math.divide_no_nan(tf.minimum(t, b), tf.maximum(t, b))
    return tf.sqrt(tf.maximum(lr * tb, 0.0))


@keras.saving.register_keras_serializable(package="kdet")
class ATSSHead(RetinaHead):
    """ATSS head. Args as :class:`RetinaHead`; defaults are the ATSS COCO config's
    (GN towers, ATSSAssigner(topk 9), focal loss, GIoU weight 2, centerness BCE weight 1,
    target_stds (0.1, 0.1, 0.2, 0.2), test NMS 0.6).

    Extra args:
        loss_centerness: BCE-with-logits loss on the centerness branch.
    """

    cls_name, reg_name = "atss_cls", "atss_reg"
    score_factor_name = "atss_centerness"

    def __init__(self, num_classes, loss_centerness=None, norm="GN", anchor_generator=None,
                 bbox_coder=None, assigner=None, loss_cls=None, loss_bbox=None,
                 reg_decoded_bbox=True, test_cfg=None, **kwargs):
        from kdet.heads.dense.anchor_head import build_loss
        self.loss_centerness = build_loss(
            loss_centerness or dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0))
        super().__init__(
            num_classes, norm=norm,
            anchor_generator=anchor_generator or ATSS_ANCHORS,
            bbox_coder=bbox_coder or ATSS_CODER,
            assigner=assigner or dict(type="ATSSAssigner", topk=9),
            loss_cls=loss_cls or dict(type="FocalLoss", gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=loss_bbox or dict(type="GIoULoss", loss_weight=2.0),
            reg_decoded_bbox=reg_decoded_bbox, test_cfg=test_cfg or ATSS_TEST_CFG, **kwargs)

    def _init_layers(self):
        super()._init_layers()
        self.conv_centerness = self._conv(self.num_base_priors, self.score_factor_name)
        self.scales = [Scale(1.0, name=f"scales.{i}", dtype=self.dtype_policy)
                       for i in range(self.anchor_generator.num_levels)]

    def _build_layers(self, shape):
        super()._build_layers(shape)
        feat = shape[:-1] + (self.feat_channels,)
        self.conv_centerness.build(feat)
        for s in self.scales:
            s.build(())

    def forward_single(self, x, level, training=None):
        cls_feat, reg_feat = self.forward_towers(x, training)
        return {"cls_scores": self.conv_cls(cls_feat),
                "bbox_preds": self.scales[level](self.conv_reg(reg_feat)),
                "score_factors": self.conv_centerness(reg_feat)}

    def torch_state_map(self, prefix="bbox_head"):
        """RetinaHead's towers and ``atss_cls`` / ``atss_reg``, plus ``atss_centerness`` (PAA's
        IoU branch has the same name) and the per-level mmcv ``Scale``s ``scales.{i}.scale``
        (0-d tensors in PyTorch, scalar variables here)."""
        out = super().torch_state_map(prefix)
        out.update(layer_params(self.conv_centerness, f"{prefix}.{self.score_factor_name}"))
        for i, scale in enumerate(self.scales):
            out.update(layer_params(scale, f"{prefix}.scales.{i}"))
        return out

    # -- loss ----------------------------------------------------------------------------
    def loss_by_feat(self, outputs, targets, anchors, gt):
        """{"loss_cls", "loss_bbox", "loss_centerness"} (mmdet v2 ``ATSSHead.loss``)."""
        cls = flatten_levels(outputs["cls_scores"], self.cls_out_channels)  # [B, A, C]
        reg = flatten_levels(outputs["bbox_preds"], 4)  # [B, A, 4]
        ctr = flatten_levels(outputs["score_factors"], 1)[..., 0]  # [B, A]
        pos = targets.pos_mask
        pos_f = tf.cast(pos, tf.float32)
        # num_total_pos = sum_i max(num_pos_i, 1) (ATSSHead.get_targets), then reduce_mean.
        num_pos = tf.reduce_sum(tf.maximum(tf.reduce_sum(pos_f, axis=1), 1.0))
        loss_cls = normalize_by_positives(
            self.loss_cls(cls, targets.labels, targets.label_weights, reduction_override="sum"),
            num_pos)
        boxes = self.bbox_coder.decode(anchors.anchors[None], reg)  # [B, A, 4]
        gt_boxes = tf.where(pos[..., None], targets.gt_boxes, anchors.anchors[None])
        ctr_t = tf.stop_gradient(tf.where(pos, centerness_target(anchors.anchors[None], gt_boxes),
                                          0.0))
        loss_bbox = normalize_by_positives(
            self.loss_bbox(boxes, gt_boxes, ctr_t * pos_f, reduction_override="sum"),
            tf.reduce_sum(ctr_t))
        loss_ctr = normalize_by_positives(
            self.loss_centerness(ctr, ctr_t, pos_f, reduction_override="sum"), num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr}

    # -- inference -----------------------------------------------------------------------
    def get_candidates(self, outputs, img_shape):
        """AnchorHead's candidates (threshold on the class score alone), scores then
        multiplied by sigmoid(centerness) (mmdet v2 ``_bbox_post_process``)."""
        cands = super().get_candidates(outputs, img_shape)
        factors = tf.sigmoid(flatten_levels(outputs["score_factors"], 1)[..., 0])
        cands["scores"] = cands["scores"] * tf.gather(factors, cands["anchor_idx"], batch_dims=1)
        return cands

    def get_config(self):
        from kdet.heads.dense.anchor_head import loss_config
        config = super().get_config()
        config["loss_centerness"] = loss_config(self.loss_centerness)
        return config
