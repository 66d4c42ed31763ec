"""``Shared2FCBBoxHead``: the R-CNN box head of Faster / Mask R-CNN (MMDetection v2
``Shared2FCBBoxHead`` = ``ConvFCBBoxHead(num_shared_fcs=2)`` on ``BBoxHead``,
mmdet/models/roi_heads/bbox_heads/convfc_bbox_head.py and bbox_head.py).

RoI features [K, 7, 7, C] -> flatten -> ``shared_fcs.0`` (1024, ReLU) -> ``shared_fcs.1``
(1024, ReLU) -> ``fc_cls`` (C_cls + 1 softmax logits, background last) and ``fc_reg``
(4 * C_cls class-specific deltas, target stds (0.1, 0.1, 0.2, 0.2)).

Note for checkpoint conversion: kdet flattens RoI features in (h, w, c) order, PyTorch in
(c, h, w); ``shared_fcs.0.weight`` is permuted accordingly (:meth:`torch_state_map`).

Losses (mmdet ``BBoxHead.loss``): softmax CE over the sampled RoIs divided by their number,
L1 on the positives' deltas of their gt class divided by the number of sampled RoIs
(mmdet's ``avg_factor=bbox_targets.size(0)``). With ``loss_bbox="giou"`` the head regresses
decoded boxes instead (mmdet ``reg_decoded_bbox=True`` + ``GIoULoss``, as in
``faster_rcnn_r50_fpn_giou_1x_coco`` whose ``loss_weight`` is 10): the positives' deltas are
decoded against their RoIs and scored with 1 - GIoU against the matched gt box. Inference (``BBoxHead.get_bboxes`` +
``multiclass_nms``): softmax scores, per-class boxes decoded and clipped, pairs with score >
``score_thr`` (0.05) kept, NMS 0.5 per class, the ``max_per_img`` (100) best.
"""
import keras
import tensorflow as tf

from kdet.core import DeltaXYWHBBoxCoder
from kdet.errors import KdetError
from kdet.heads.dense.base import multiclass_nms
from kdet.layers.torch_layout import chw_flattened_linear, layer_params
from kdet.losses import cross_entropy, l1_loss
from kdet.losses.iou_loss import giou_loss

# mmdet v2 mask_rcnn_r50_fpn.py test_cfg.rcnn.
RCNN_TEST_CFG = dict(score_thr=0.05, iou_threshold=0.5, max_per_img=100, mask_thr_binary=0.5)


@keras.saving.register_keras_serializable(package="kdet")
class Shared2FCBBoxHead(keras.layers.Layer):
    """Box classification and class-specific regression of RoIs.

    Args:
        num_classes: foreground classes.
        in_channels: RoI feature channels (256).
        roi_feat_size: RoI side (7).
        fc_out_channels: width of the two shared FCs (1024).
        target_stds: the delta coder's stds ((0.1, 0.1, 0.2, 0.2)).
        reg_class_agnostic: one box for all classes instead of one per class (False).
        loss_cls_weight, loss_bbox_weight: loss weights (1.0, 1.0; mmdet's GIoU config uses
            10 for ``loss_bbox_weight``).
        loss_bbox: "l1" (L1 on normalised deltas, mmdet's default) or "giou" (1 - GIoU of the
            decoded boxes, mmdet ``reg_decoded_bbox=True`` with ``GIoULoss``).
    Call:
        roi_feats [K, S, S, C] -> (cls_logits [K, num_classes + 1], deltas [K, 4 * R]),
        R = 1 if class agnostic else num_classes.
    """

    def __init__(self, num_classes, in_channels=256, roi_feat_size=7, fc_out_channels=1024,
                 target_stds=(0.1, 0.1, 0.2, 0.2), reg_class_agnostic=False,
                 loss_cls_weight=1.0, loss_bbox_weight=1.0, loss_bbox="l1", **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise KdetError(f"num_classes must be >= 1, got {num_classes}")
        if loss_bbox not in ("l1", "giou"):
            raise KdetError(f"loss_bbox must be 'l1' or 'giou', got {loss_bbox!r}")
        self.loss_bbox = loss_bbox
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.roi_feat_size = int(roi_feat_size)
        self.fc_out_channels = int(fc_out_channels)
        self.target_stds = tuple(float(s) for s in target_stds)
        self.reg_class_agnostic = bool(reg_class_agnostic)
        self.loss_cls_weight = float(loss_cls_weight)
        self.loss_bbox_weight = float(loss_bbox_weight)
        self.bbox_coder = DeltaXYWHBBoxCoder(target_stds=self.target_stds)
        # mmdet ConvFCBBoxHead init: Xavier-uniform shared FCs; fc_cls N(0, 0.01); fc_reg
        # N(0, 0.001); zero biases.
        xavier = keras.initializers.GlorotUniform()
        self.shared_fcs = [
            keras.layers.Dense(self.fc_out_channels, activation="relu", kernel_initializer=xavier,
                               name=f"shared_fcs.{i}", dtype=self.dtype_policy) for i in range(2)]
        self.fc_cls = keras.layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="fc_cls", dtype=self.dtype_policy)
        self.num_reg = 1 if self.reg_class_agnostic else self.num_classes
        self.fc_reg = keras.layers.Dense(
            4 * self.num_reg, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="fc_reg", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        flat = self.roi_feat_size * self.roi_feat_size * self.in_channels
        self.shared_fcs[0].build((None, flat))
        self.shared_fcs[1].build((None, self.fc_out_channels))
        self.fc_cls.build((None, self.fc_out_channels))
        self.fc_reg.build((None, self.fc_out_channels))
        self.built = True

    def call(self, roi_feats):
        x = tf.reshape(roi_feats, [-1, self.roi_feat_size * self.roi_feat_size * self.in_channels])
        for fc in self.shared_fcs:
            x = fc(x)
        return self.fc_cls(x), self.fc_reg(x)

    def torch_state_map(self, prefix="roi_head.bbox_head"):
        """{mmdet key: variable or TorchParam} (``ConvFCBBoxHead`` with 2 shared FCs).

        * ``shared_fcs.0.weight`` [1024, C*S*S]: mmdet flattens the NCHW RoI features as
          (C, H, W), kdet the NHWC ones as (H, W, C) -- its input axis is permuted
          (:func:`kdet.layers.torch_layout.chw_flattened_linear`), not just transposed.
        * ``fc_cls`` [num_classes + 1, 1024]: mmdet's softmax logits put background LAST
          (labels 0..C-1 foreground, C background, mmdet >= 2.0); kdet uses the same order
          (``softmax(...)[:, :num_classes]``, background label ``num_classes``): no reorder.
        * ``fc_reg`` [4 * num_classes, 1024] (class-specific; 4 if class-agnostic): mmdet reads
          it as ``view(K, -1, 4)[k]`` for class k, kdet as ``reshape([K, R, 4])``: same order.
        """
        s, c = self.roi_feat_size, self.in_channels
        first = self.shared_fcs[0]
        out = {f"{prefix}.shared_fcs.0.weight": chw_flattened_linear(first.kernel, c, s, s),
               f"{prefix}.shared_fcs.0.bias": first.bias}
        for layer in (self.shared_fcs[1], self.fc_cls, self.fc_reg):
            out.update(layer_params(layer, f"{prefix}.{layer.name}"))
        return out

    # -- training ------------------------------------------------------------------------
    def get_targets(self, sampling, gt_boxes):
        """Targets of sampled RoIs.

        Args:
            sampling: :class:`kdet.core.SamplingResult` ([B, S] fields, ``boxes`` [B, S, 4]).
            gt_boxes: [B, N, 4] padded gt boxes.
        Returns:
            dict: labels [B, S] (gt class for positives, ``num_classes`` for negatives, -1
            for empty slots), label_weights [B, S], bbox_targets [B, S, 4] (normalised
            deltas; with ``loss_bbox="giou"`` the matched gt boxes xyxy), bbox_weights [B, S],
            and with ``loss_bbox="giou"`` rois [B, S, 4] (the sampled boxes, to decode against).
        """
        matched = tf.gather(tf.cast(gt_boxes, tf.float32), tf.maximum(sampling.gt_inds - 1, 0),
                            batch_dims=1)
        pos = sampling.is_pos
        labels = tf.where(pos, sampling.labels, tf.where(sampling.valid, self.num_classes, -1))
        out = {"labels": labels, "label_weights": tf.cast(sampling.valid, tf.float32),
               "bbox_weights": tf.cast(pos, tf.float32)}
        if self.loss_bbox == "giou":
            out["bbox_targets"] = tf.where(pos[..., None], matched, 0.0)
            out["rois"] = tf.cast(sampling.boxes, tf.float32)
        else:
            targets = self.bbox_coder.encode(sampling.boxes, matched)
            out["bbox_targets"] = tf.where(pos[..., None], targets, 0.0)
        return out

    def loss(self, cls_logits, deltas, targets):
        """{"loss_cls", "loss_bbox"}.

        Args:
            cls_logits: [B * S, num_classes + 1]; deltas: [B * S, 4 * R].
            targets: :meth:`get_targets`'s dict.
        """
        labels = tf.reshape(targets["labels"], [-1])
        weights = tf.reshape(targets["label_weights"], [-1])
        # mmdet: avg_factor = max(#RoIs with label weight > 0, 1).
        num = tf.maximum(tf.reduce_sum(tf.cast(weights > 0, tf.float32)), 1.0)
        loss_cls = cross_entropy(cls_logits, labels, weights, avg_factor=num)
        pred = self._class_deltas(deltas, tf.maximum(labels, 0))
        bbox_w = tf.reshape(targets["bbox_weights"], [-1])
        bbox_targets = tf.reshape(targets["bbox_targets"], [-1, 4])
        if self.loss_bbox == "giou":
            # decoded without clipping (mmdet decodes with max_shape=None in the loss);
            # non-positives get a dummy unit box so the masked-out GIoU stays finite.
            boxes = self.bbox_coder.decode(tf.reshape(targets["rois"], [-1, 4]), pred)
            pos = bbox_w[:, None] > 0
            unit = tf.constant([0.0, 0.0, 1.0, 1.0])
            loss_bbox = giou_loss(tf.where(pos, boxes, unit), tf.where(pos, bbox_targets, unit),
                                  bbox_w, avg_factor=num)
        else:
            loss_bbox = l1_loss(pred, bbox_targets, bbox_w[:, None] * tf.ones_like(pred),
                                avg_factor=num)
        return {"loss_cls": self.loss_cls_weight * loss_cls,
                "loss_bbox": self.loss_bbox_weight * loss_bbox}

    def _class_deltas(self, deltas, labels):
        """[K, 4R] -> [K, 4], the deltas of each RoI's class (or the only box)."""
        deltas = tf.reshape(tf.cast(deltas, tf.float32), [-1, self.num_reg, 4])
        if self.reg_class_agnostic:
            return deltas[:, 0]
        labels = tf.clip_by_value(labels, 0, self.num_classes - 1)
        return tf.gather(deltas, labels, axis=1, batch_dims=1)

    # -- inference -----------------------------------------------------------------------
    def predict(self, rois, rois_valid, cls_logits, deltas, img_shape, test_cfg=None):
        """Padded detections from the RoIs of a batch.

        Args:
            rois: [B, P, 4] proposals; rois_valid: [B, P] bool.
            cls_logits: [B * P, num_classes + 1]; deltas: [B * P, 4 * R].
            img_shape: [B, 2] (h, w) boxes are clipped to.
            test_cfg: ``score_thr``, ``iou_threshold``, ``max_per_img`` (mmdet test_cfg.rcnn).
        Returns:
            dict boxes [B, M, 4], scores [B, M], labels [B, M] (-1 pad), num_detections [B].
        """
        cfg = dict(RCNN_TEST_CFG, **(test_cfg or {}))
        b = rois.shape[0] if rois.shape[0] is not None else tf.shape(rois)[0]
        p = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
        c = self.num_classes
        scores = tf.nn.softmax(tf.cast(cls_logits, tf.float32), axis=-1)[:, :c]
        scores = tf.reshape(scores, [b, p, c])
        deltas = tf.reshape(tf.cast(deltas, tf.float32), [b, p, 4 * self.num_reg])
        boxes = self.bbox_coder.decode(rois, deltas, max_shape=img_shape)  # [B, P, 4R]
        boxes = tf.reshape(boxes, [b, p, self.num_reg, 4])
        boxes = tf.broadcast_to(boxes, [b, p, c, 4]) if self.reg_class_agnostic else boxes
        labels = tf.broadcast_to(tf.range(c, dtype=tf.int32)[None, None], [b, p, c])
        ok = (scores > float(cfg["score_thr"])) & rois_valid[:, :, None]
        labels = tf.where(ok, labels, -1)
        dets, _ = multiclass_nms(tf.reshape(boxes, [b, -1, 4]), tf.reshape(scores, [b, -1]),
                                 tf.reshape(labels, [b, -1]), float(cfg["iou_threshold"]),
                                 int(cfg["max_per_img"]))
        return dets

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "in_channels": self.in_channels,
                       "roi_feat_size": self.roi_feat_size,
                       "fc_out_channels": self.fc_out_channels,
                       "target_stds": list(self.target_stds),
                       "reg_class_agnostic": self.reg_class_agnostic,
                       "loss_cls_weight": self.loss_cls_weight,
                       "loss_bbox_weight": self.loss_bbox_weight, "loss_bbox": self.loss_bbox})
        return config
