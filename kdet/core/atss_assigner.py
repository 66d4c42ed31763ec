"""ATSSAssigner: adaptive training sample selection (Zhang et al., CVPR 2020,
arXiv:1912.02424), MMDetection v2's ``ATSSAssigner`` batched with static shapes.

For every ground truth:
 1. on each pyramid level, the ``topk`` anchors whose centres are closest to the
    gt centre (L2) become candidates (k * L in all);
 2. the IoU threshold is mean + std (unbiased, as torch's ``std``) of the
    candidates' IoUs with the gt;
 3. candidates with IoU >= threshold whose centre lies inside the gt (every side
    more than 0.01 px away) are positive;
 4. an anchor positive for several gts goes to the one with the highest IoU.
Everything else is negative (0); anchors ignored by a crowd region (IoF >
``ignore_iof_thr``) are -1 unless they turn positive; invalid anchors are -1 and
never candidates. An image without ground truth makes every valid anchor negative.
"""
import tensorflow as tf

from kdet.core.assign_result import AssignResult, batch_boxes, batch_size_of, prepare_gt
from kdet.errors import KdetError
from kdet.ops.boxes import pairwise_overlaps

_INF = 1e8  # mmdet's INF for excluded distances / IoUs


class ATSSAssigner:
    """Adaptive training sample selection.

    Args:
        topk: candidates per level per gt (mmdet ATSS / PAA configs: 9).
        ignore_iof_thr: IoF with a crowd box above which an anchor is ignored;
            negative disables (mmdet default -1).
    """

    def __init__(self, topk=9, ignore_iof_thr=-1.0):
        if int(topk) < 1:
            raise KdetError(f"topk must be >= 1, got {topk}")
        self.topk = int(topk)
        self.ignore_iof_thr = float(ignore_iof_thr)

    def assign(self, anchors, num_level_anchors, gt_boxes, gt_labels, gt_ignore=None,
               anchor_valid=None):
        """Assign ground truth to anchors.

        Args:
            anchors: [A, 4] or [B, A, 4] xyxy, all levels concatenated.
            num_level_anchors: list[int], anchors per level (sum = A), static.
            gt_boxes: [B, N, 4] xyxy, padded. gt_labels: [B, N] int, -1 = padding.
            gt_ignore: [B, N] bool crowd flags, or None.
            anchor_valid: [B, A] bool (e.g. ``anchor_inside_flags``), or None.
        Returns:
            :class:`AssignResult`; max_overlaps is the IoU with the assigned gt for
            positives and 0 elsewhere (mmdet puts -INF there).
        """
        num_level_anchors = [int(n) for n in num_level_anchors]
        gt_boxes, gt_labels, real, crowd = prepare_gt(gt_boxes, gt_labels, gt_ignore)
        bsz = batch_size_of(gt_boxes)
        anchors = batch_boxes(anchors, bsz)
        total = anchors.shape[1]
        if total is not None and sum(num_level_anchors) != total:
            raise KdetError(f"num_level_anchors sum to {sum(num_level_anchors)} but there "
                            f"are {total} anchors")
        if anchor_valid is None:
            anchor_valid = tf.ones(tf.shape(anchors)[:2], tf.bool)
        anchor_valid = tf.cast(anchor_valid, tf.bool)

        overlaps = pairwise_overlaps(anchors, gt_boxes, "iou")  # [B, A, N]
        a_ctr = (anchors[..., :2] + anchors[..., 2:]) / 2.0  # [B, A, 2]
        g_ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # [B, N, 2]
        diff = a_ctr[:, :, None, :] - g_ctr[:, None, :, :]
        dist = tf.sqrt(tf.reduce_sum(diff * diff, axis=-1))  # [B, A, N]

        ignored = tf.zeros_like(anchor_valid)
        if self.ignore_iof_thr > 0:
            iof = pairwise_overlaps(anchors, gt_boxes, "iof")
            iof = tf.where(crowd[:, None, :], iof, -1.0)
            ignored = tf.reduce_max(iof, axis=2) > self.ignore_iof_thr  # [B, A]
            dist = tf.where(ignored[:, :, None], _INF, dist)
        # Invalid anchors are not in mmdet's list at all: rank them after even the
        # ignored (INF) ones, and drop them from the candidates below.
        dist = tf.where(anchor_valid[:, :, None], dist, 3 * _INF)
        dist_t = tf.transpose(dist, [0, 2, 1])  # [B, N, A]

        cand_idx, cand_ok = [], []
        start = 0
        for count in num_level_anchors:
            k = min(self.topk, count)
            if k > 0:
                vals, idx = tf.math.top_k(-dist_t[:, :, start:start + count], k=k)
                cand_idx.append(idx + start)
                cand_ok.append(-vals < 2 * _INF)
            start += count
        cand_idx = tf.concat(cand_idx, axis=2)  # [B, N, K]
        cand_ok = tf.concat(cand_ok, axis=2)
        ok_f = tf.cast(cand_ok, tf.float32)

        ov_t = tf.transpose(overlaps, [0, 2, 1])  # [B, N, A]
        cand_iou = tf.gather(ov_t, cand_idx, batch_dims=2)  # [B, N, K]
        count = tf.reduce_sum(ok_f, axis=2, keepdims=True)
        mean = tf.reduce_sum(cand_iou * ok_f, axis=2, keepdims=True) / tf.maximum(count, 1.0)
        var = tf.reduce_sum(tf.square(cand_iou - mean) * ok_f, axis=2, keepdims=True)
        std = tf.sqrt(var / tf.maximum(count - 1.0, 1.0))  # unbiased, as torch.std
        is_pos = cand_ok & (cand_iou >= mean + std)

        cand_ctr = tf.gather(a_ctr, cand_idx, batch_dims=1)  # [B, N, K, 2]
        g = gt_boxes[:, :, None, :]
        sides = tf.stack([cand_ctr[..., 0] - g[..., 0], cand_ctr[..., 1] - g[..., 1],
                          g[..., 2] - cand_ctr[..., 0], g[..., 3] - cand_ctr[..., 1]], -1)
        is_pos = is_pos & (tf.reduce_min(sides, axis=-1) > 0.01) & real[:, :, None]

        # Scatter the (gt, candidate) positives into an [B, A, N] mask.
        shape = tf.shape(cand_idx)
        b_idx = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
        n_idx = tf.broadcast_to(tf.range(shape[1])[None, :, None], shape)
        indices = tf.stack([b_idx, cand_idx, n_idx], axis=-1)  # [B, N, K, 3]
        pos_mask = tf.scatter_nd(indices, tf.cast(is_pos, tf.int32), tf.shape(overlaps)) > 0

        ov_inf = tf.where(pos_mask, overlaps, -_INF)
        max_ov = tf.reduce_max(ov_inf, axis=2)  # [B, A]
        argmax_ov = tf.argmax(ov_inf, axis=2, output_type=tf.int32)
        positive = max_ov > -_INF

        gt_inds = tf.where(ignored, -1, 0)
        gt_inds = tf.where(positive, argmax_ov + 1, gt_inds)
        has_gt = tf.reduce_any(real, axis=1, keepdims=True)
        gt_inds = tf.where(has_gt, gt_inds, 0)
        gt_inds = tf.where(anchor_valid, gt_inds, -1)
        max_ov = tf.where(gt_inds > 0, max_ov, 0.0)
        labels = tf.gather(gt_labels, tf.maximum(gt_inds - 1, 0), batch_dims=1)
        labels = tf.where(gt_inds > 0, labels, -1)
        return AssignResult(gt_inds=gt_inds, max_overlaps=max_ov, labels=labels)

    def get_config(self):
        return {"topk": self.topk, "ignore_iof_thr": self.ignore_iof_thr}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
