"""``PAAHead``: Probabilistic Anchor Assignment with IoU prediction (Kim & Lee, ECCV 2020,
arXiv:2007.08103), MMDetection v2's ``PAAHead(ATSSHead)`` -- fully in graph.

Training (``loss_by_feat``):
 1. first assignment: MaxIoU (pos 0.1, neg 0.1, min_pos_iou 0): every anchor with IoU >= 0.1
    with a gt is a candidate of its best gt;
 2. every candidate's score is its classification (focal, summed over classes) plus
    localisation (GIoU x 1.3) loss, without gradient;
 3. ``paa_reassign``: per gt and level, the ``topk`` (9) candidates of lowest score; a
    two-component 1-D GMM (:func:`kdet.core.gmm.fit_gmm_1d`, means initialised to the min and
    max score, weights 0.5, precisions 1) is fitted to each gt's sorted scores;
 4. ``gmm_separation_scheme`` (Fig. 3(c) of the paper): the candidates of the low-loss
    component up to the one of highest mixture likelihood are positive, every other
    candidate becomes negative (none ignored);
 5. losses: focal over all anchors / max(num_pos, B), GIoU of positives weighted by the
    IoU of the (detached) predicted box with its gt / sum of those IoUs (x 1.3), and BCE of
    the IoU-prediction branch against that IoU / num_pos (x 0.5).

Everything is batched with static shapes (``[B, N, 9 * L]`` candidate slots per gt slot, the
GMM for all gts in one ``tf.while_loop``), so the step compiles under XLA; MMDetection instead
leaves the device for scikit-learn. Normalisers are per replica as mmdet's (no reduce_mean).

Inference: ``sqrt(sigmoid(cls) * sigmoid(iou))`` scores, per-level ``nms_pre`` anchors, NMS
0.6, then (``score_voting=True``) each kept box becomes the average of the same-class
candidate boxes weighted by ``exp(-(1 - IoU)^2 / 0.025) * score``.
"""
import keras
import tensorflow as tf

from kdet.core.gmm import fit_gmm_1d, gmm_predict
from kdet.errors import KdetError
from kdet.heads.dense.atss_head import ATSS_ANCHORS, ATSS_CODER, ATSSHead
from kdet.heads.dense.base import flatten_level, flatten_levels, multiclass_nms
from kdet.ops.boxes import aligned_overlaps, clip_boxes, pairwise_overlaps

# mmdet paa_head.py: EPS = 1e-12 (floor of the IoU weights of the box loss).
EPS = 1e-12
# configs/paa/paa_r50_fpn_1x_coco.py
PAA_TEST_CFG = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.6, max_per_img=100,
                    nms_candidates=2000)
_COVARIANCE_TYPES = ("diag", "full", "spherical")  # identical for 1-D samples
_INF = 1e8


@keras.saving.register_keras_serializable(package="kdet")
class PAAHead(ATSSHead):
    """PAA head: ATSSHead's layers (the centerness branch predicts IoU) with PAA's
    assignment, losses and post-processing. Defaults are configs/paa/paa_r50_fpn_1x_coco.py.

    Args:
        num_classes: foreground classes.
        topk: candidates kept per gt and level for the GMM (9).
        score_voting: refine the kept boxes by score voting at test time (True; the seed's
            table reports both).
        covariance_type: the GMM's ('diag'; 'full' and 'spherical' are the same in 1-D).
        gmm_max_iter, gmm_tol, gmm_reg_covar: EM settings (scikit-learn's 100, 1e-3, 1e-6).
        test_cfg: adds ``nms_candidates`` (2000): the (anchor, class) pairs above ``score_thr``
            that enter NMS, best first. mmdet passes all of them; the result is identical
            whenever the ``max_per_img`` kept boxes are among them.
        **kwargs: :class:`ATSSHead` arguments.
    """

    def __init__(self, num_classes, topk=9, score_voting=True, covariance_type="diag",
                 gmm_max_iter=100, gmm_tol=1e-3, gmm_reg_covar=1e-6, anchor_generator=None,
                 bbox_coder=None, assigner=None, loss_cls=None, loss_bbox=None,
                 loss_centerness=None, test_cfg=None, **kwargs):
        if covariance_type not in _COVARIANCE_TYPES:
            raise KdetError(f"covariance_type must be one of {_COVARIANCE_TYPES} (1-D GMM), "
                            f"got {covariance_type!r}")
        if int(topk) < 1:
            raise KdetError(f"topk must be >= 1, got {topk}")
        self.topk = int(topk)
        self.score_voting = bool(score_voting)
        self.covariance_type = covariance_type
        self.gmm_max_iter = int(gmm_max_iter)
        self.gmm_tol = float(gmm_tol)
        self.gmm_reg_covar = float(gmm_reg_covar)
        cfg = dict(PAA_TEST_CFG)
        cfg.update(test_cfg or {})
        super().__init__(
            num_classes,
            anchor_generator=anchor_generator or ATSS_ANCHORS,
            bbox_coder=bbox_coder or ATSS_CODER,
            assigner=assigner or dict(type="MaxIoUAssigner", pos_iou_thr=0.1, neg_iou_thr=0.1,
                                      min_pos_iou=0.0),
            loss_cls=loss_cls or dict(type="FocalLoss", gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=loss_bbox or dict(type="GIoULoss", loss_weight=1.3),
            loss_centerness=loss_centerness or dict(type="CrossEntropyLoss", use_sigmoid=True,
                                                    loss_weight=0.5),
            test_cfg=cfg, **kwargs)

    # -- training ------------------------------------------------------------------------
    def candidate_losses(self, cls, boxes, targets):
        """mmdet ``get_pos_loss``: cls (focal summed over classes) + loc (GIoU x weight) loss
        of every anchor, [B, A] (meaningful for the first-assignment positives)."""
        fl = self.loss_cls(cls, targets.labels, targets.label_weights, reduction_override="none")
        loc = self.loss_bbox(boxes, targets.gt_boxes, reduction_override="none")
        return tf.reduce_sum(fl, axis=-1) + loc

    def paa_reassign(self, pos_losses, targets, num_level_anchors, num_gts):
        """Second assignment by the per-gt GMM.

        Args:
            pos_losses: [B, A] candidate losses (no gradient).
            targets: the first assignment's :class:`DenseTargets`.
            num_level_anchors: list[int], static.
            num_gts: N, the padded gt slots.
        Returns:
            (pos [B, A] bool, ignore [B, A] bool) after PAA.
        """
        gt_inds = targets.gt_inds  # [B, A], 1-based for positives
        cand = targets.pos_mask
        slot = tf.range(1, num_gts + 1)[None, :, None]  # [1, N, 1]
        losses, indices = [], []
        start = 0
        for count in num_level_anchors:
            lv_inds = gt_inds[:, None, start:start + count]  # [B, 1, A_l]
            lv_cand = cand[:, None, start:start + count]
            lv_loss = tf.where(lv_cand & tf.equal(lv_inds, slot),
                               pos_losses[:, None, start:start + count], _INF)  # [B, N, A_l]
            k = min(self.topk, count)
            neg_vals, idx = tf.math.top_k(-lv_loss, k=k)
            losses.append(-neg_vals)
            indices.append(idx + start)
            start += count
        loss = tf.concat(losses, axis=2)  # [B, N, K]
        idx = tf.concat(indices, axis=2)
        # Sort each gt's candidates by loss, ascending (invalid slots, loss _INF, last).
        neg_sorted, order = tf.math.top_k(-loss, k=loss.shape[2])
        loss = -neg_sorted
        idx = tf.gather(idx, order, batch_dims=2)
        ok = loss < _INF / 2
        b, n, kk = tf.shape(loss)[0], tf.shape(loss)[1], loss.shape[2]
        flat_loss = tf.reshape(loss, [-1, kk])
        flat_ok = tf.reshape(ok, [-1, kk])
        params = fit_gmm_1d(flat_loss, flat_ok, max_iter=self.gmm_max_iter, tol=self.gmm_tol,
                            reg_covar=self.gmm_reg_covar)
        comp, scores = gmm_predict(params, tf.where(flat_ok, flat_loss, 0.0))
        fitted = tf.reshape(tf.reduce_sum(tf.cast(flat_ok, tf.int32), axis=1) >= 2, [b, n, 1])
        comp = tf.reshape(comp, [b, n, kk])
        scores = tf.reshape(tf.cast(scores, tf.float32), [b, n, kk])
        pos_slots, ignore_slots = self.gmm_separation_scheme(comp, scores, ok & fitted)
        shape = tf.shape(gt_inds)
        bidx = tf.broadcast_to(tf.range(b)[:, None, None], tf.shape(idx))
        where = tf.stack([bidx, idx], axis=-1)  # [B, N, K, 2]
        pos = tf.scatter_nd(where, tf.cast(pos_slots, tf.int32), shape) > 0
        ignore = tf.scatter_nd(where, tf.cast(ignore_slots, tf.int32), shape) > 0
        return pos & cand, ignore & cand & ~pos

    def gmm_separation_scheme(self, components, scores, valid):
        """mmdet's scheme, Fig. 3(c) of the paper: among the candidates (sorted by loss) of
        component 0 (the low-loss one), those up to and including the one with the highest
        likelihood are positive; nothing is ignored.

        Args:
            components: [B, N, K] int32 GMM component of each sorted candidate.
            scores: [B, N, K] mixture log-likelihood. valid: [B, N, K] bool.
        Returns:
            (pos [B, N, K] bool, ignore [B, N, K] bool) over the candidate slots.
        """
        fg = valid & tf.equal(components, 0)
        best = tf.argmax(tf.where(fg, scores, -_INF), axis=2, output_type=tf.int32)  # [B, N]
        position = tf.range(tf.shape(scores)[2])[None, None, :]
        pos = fg & (position <= best[..., None])
        return pos, tf.zeros_like(pos)

    def loss_by_feat(self, outputs, targets, anchors, gt):
        """{"loss_cls", "loss_bbox", "loss_iou"} (mmdet v2 ``PAAHead.loss``)."""
        cls = flatten_levels(outputs["cls_scores"], self.cls_out_channels)  # [B, A, C]
        reg = flatten_levels(outputs["bbox_preds"], 4)
        iou_pred = flatten_levels(outputs["score_factors"], 1)[..., 0]  # [B, A]
        boxes = self.bbox_coder.decode(anchors.anchors[None], reg)  # [B, A, 4]
        pos_losses = tf.stop_gradient(self.candidate_losses(cls, boxes, targets))
        pos, ignore = self.paa_reassign(pos_losses, targets, anchors.num_level_anchors,
                                        gt["boxes"].shape[1] or tf.shape(gt["boxes"])[1])
        pos, ignore = tf.stop_gradient(pos), tf.stop_gradient(ignore)
        labels = tf.where(pos, targets.labels, self.num_classes)
        label_weights = tf.where(ignore, 0.0, targets.label_weights)
        pos_f = tf.cast(pos, tf.float32)
        num_pos = tf.reduce_sum(pos_f)
        bsz = tf.cast(tf.shape(cls)[0], tf.float32)
        loss_cls = self.loss_cls(cls, labels, label_weights, reduction_override="sum") / \
            tf.maximum(num_pos, bsz)
        gt_boxes = tf.where(pos[..., None], targets.gt_boxes, anchors.anchors[None])
        iou_t = tf.stop_gradient(aligned_overlaps(boxes, gt_boxes) * pos_f)
        loss_iou = self.loss_centerness(iou_pred, iou_t, pos_f, avg_factor=num_pos)
        loss_bbox = self.loss_bbox(boxes, gt_boxes, tf.maximum(iou_t, EPS) * pos_f,
                                   avg_factor=tf.reduce_sum(iou_t))
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_iou": loss_iou}

    # -- inference -----------------------------------------------------------------------
    def get_candidates(self, outputs, img_shape):
        """Per level, the ``nms_pre`` anchors of highest ``max_c sqrt(p_c * iou)``, decoded.

        Returns ``boxes [B, K, 4]`` and ``nms_scores [B, K, C]`` (``sqrt(p * iou)``)."""
        sizes = [(m.shape[1] if m.shape[1] is not None else tf.shape(m)[1],
                  m.shape[2] if m.shape[2] is not None else tf.shape(m)[2])
                 for m in outputs["cls_scores"]]
        levels = self.anchor_generator.grid_anchors(sizes)
        nms_pre = int(self.test_cfg["nms_pre"])
        boxes, scores = [], []
        for lvl, anchors in enumerate(levels):
            probs = tf.sigmoid(flatten_level(outputs["cls_scores"][lvl], self.cls_out_channels))
            iou = tf.sigmoid(flatten_level(outputs["score_factors"][lvl], 1))  # [B, n, 1]
            deltas = flatten_level(outputs["bbox_preds"][lvl], 4)
            nms_scores = tf.sqrt(probs * iou)  # [B, n, C]
            n = nms_scores.shape[1]
            if n is None or 0 < nms_pre < n:
                k = nms_pre if n is not None else tf.minimum(nms_pre, tf.shape(nms_scores)[1])
                _, idx = tf.math.top_k(tf.reduce_max(nms_scores, axis=-1), k=k)
                anchors = tf.gather(anchors, idx)  # [B, k, 4]
                deltas = tf.gather(deltas, idx, batch_dims=1)
                nms_scores = tf.gather(nms_scores, idx, batch_dims=1)
            else:
                anchors = tf.broadcast_to(anchors[None], tf.shape(deltas))
            boxes.append(self.bbox_coder.decode(anchors, deltas, max_shape=img_shape))
            scores.append(nms_scores)
        return {"boxes": tf.concat(boxes, 1), "nms_scores": tf.concat(scores, 1)}

    def post_process(self, candidates, img_shape):
        """mmdet ``multiclass_nms`` over the (anchor, class) pairs above ``score_thr``, then
        score voting when enabled."""
        boxes, nms_scores = candidates["boxes"], candidates["nms_scores"]
        c = self.cls_out_channels
        b = tf.shape(boxes)[0]
        flat = tf.reshape(nms_scores, [b, -1])
        n_pairs = nms_scores.shape[1] * c if nms_scores.shape[1] is not None else None
        k = int(self.test_cfg.get("nms_candidates", 2000))
        k = min(k, n_pairs) if n_pairs is not None else tf.minimum(k, tf.shape(flat)[1])
        vals, idx = tf.math.top_k(flat, k=k)
        labels = tf.where(vals > float(self.test_cfg["score_thr"]), idx % c, -1)
        pair_boxes = tf.gather(boxes, idx // c, batch_dims=1)
        dets, _ = multiclass_nms(pair_boxes, vals, labels, self.test_cfg["iou_threshold"],
                                 int(self.test_cfg["max_per_img"]))
        if self.score_voting:
            # a weighted mean of clipped boxes can exceed the image by float rounding
            voted = clip_boxes(self.vote(dets, boxes, nms_scores), img_shape)
            dets["boxes"] = tf.where(dets["labels"][..., None] >= 0, voted, 0.0)
        return dets

    def vote(self, dets, boxes, nms_scores):
        """mmdet ``PAAHead.score_voting``: every kept box becomes the average of the candidate
        boxes of its class with IoU > 0.01, weighted by ``exp(-(1 - IoU)^2 / 0.025) * score``
        over candidates with score > ``score_thr``; scores and labels are unchanged.

        Args:
            dets: the NMS output (``boxes [B, M, 4]``, ``labels [B, M]``).
            boxes: [B, K, 4] all candidate boxes. nms_scores: [B, K, C].
        Returns:
            [B, M, 4] voted boxes (padding rows stay 0).
        """
        det_boxes, det_labels = dets["boxes"], dets["labels"]
        valid = det_labels >= 0
        ious = pairwise_overlaps(det_boxes, boxes)  # [B, M, K]
        per_class = tf.transpose(nms_scores, [0, 2, 1])  # [B, C, K]
        cand_scores = tf.gather(per_class, tf.maximum(det_labels, 0), batch_dims=1)  # [B, M, K]
        use = (cand_scores > float(self.test_cfg["score_thr"])) & (ious > 0.01)
        w = tf.where(use, tf.exp(-tf.square(1.0 - ious) / 0.025) * cand_scores, 0.0)
        voted = tf.math.divide_no_nan(tf.einsum("bmk,bkd->bmd", w, boxes),
                                      tf.reduce_sum(w, axis=2, keepdims=True))
        has = valid & (tf.reduce_sum(w, axis=2) > 0)
        return tf.where(has[..., None], voted, det_boxes)

    def get_config(self):
        config = super().get_config()
        config.update({"topk": self.topk, "score_voting": self.score_voting,
                       "covariance_type": self.covariance_type,
                       "gmm_max_iter": self.gmm_max_iter, "gmm_tol": self.gmm_tol,
                       "gmm_reg_covar": self.gmm_reg_covar})
        return config
