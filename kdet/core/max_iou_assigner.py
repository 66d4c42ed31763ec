"""MaxIoUAssigner: assign each box to its best-overlapping ground truth, MMDetection
v2's ``MaxIoUAssigner`` batched over images with static shapes.

Steps (order matters, as in mmdet):
 1. every box starts ignored (-1);
 2. boxes whose max IoU with the ground truth is in [0, neg_iou_thr) (or in
    [lo, hi) for a tuple) become negative (0);
 3. boxes with max IoU >= pos_iou_thr become positive, matched to their best gt;
 4. with ``match_low_quality``, every gt whose best IoU is >= min_pos_iou takes
    the boxes that reach that best IoU (all of them when ``gt_max_assign_all``,
    else the first), later gts overriding earlier ones.
Crowd regions (``gt_ignore``): with ``ignore_iof_thr > 0`` boxes whose IoF with a
crowd box exceeds it get overlaps -1 (so they stay ignored unless step 4 picks
them). An image with no (non-crowd) ground truth makes all its valid boxes
negative. Invalid boxes (``box_valid`` False, e.g. anchors in the batch padding)
take no part and come out ignored. One deliberate difference: a gt whose best
IoU is 0 (it overlaps no box, e.g. a zero-area box) gets no low-quality match,
where mmdet with ``min_pos_iou=0`` would give it every box of IoU 0.
"""
import tensorflow as tf

from kdet.core.assign_result import AssignResult, batch_boxes, batch_size_of, prepare_gt
from kdet.errors import KdetError
from kdet.ops.boxes import pairwise_overlaps


class MaxIoUAssigner:
    """Max-IoU assignment of padded ground truth to boxes.

    Args:
        pos_iou_thr: IoU for a positive box (mmdet: RPN 0.7, R-CNN 0.5, RetinaNet 0.5).
        neg_iou_thr: float (negative when max IoU in [0, thr)) or (lo, hi) tuple
            (negative when in [lo, hi)). RPN 0.3, R-CNN 0.5, RetinaNet 0.4.
        min_pos_iou: minimum IoU for a low-quality match (RPN 0.3, RetinaNet 0).
        gt_max_assign_all: in step 4, give a gt every box tying its best IoU.
        ignore_iof_thr: IoF with a crowd box above which a box is ignored;
            negative disables (mmdet COCO configs: -1).
        ignore_wrt_candidates: IoF relative to the box (True, mmdet default) or to
            the crowd box.
        match_low_quality: enable step 4 (RPN / single-stage: True; R-CNN: False).
    """

    def __init__(self, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0, gt_max_assign_all=True,
                 ignore_iof_thr=-1.0, ignore_wrt_candidates=True, match_low_quality=True):
        if isinstance(neg_iou_thr, (list, tuple)):
            if len(neg_iou_thr) != 2 or neg_iou_thr[0] > neg_iou_thr[1]:
                raise KdetError(f"neg_iou_thr as a range must be (lo, hi) with lo <= hi, "
                                f"got {neg_iou_thr}")
            neg_iou_thr = (float(neg_iou_thr[0]), float(neg_iou_thr[1]))
        elif isinstance(neg_iou_thr, (int, float)):
            neg_iou_thr = float(neg_iou_thr)
        else:
            raise KdetError(f"neg_iou_thr must be a float or a (lo, hi) pair, got {neg_iou_thr!r}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = bool(gt_max_assign_all)
        self.ignore_iof_thr = float(ignore_iof_thr)
        self.ignore_wrt_candidates = bool(ignore_wrt_candidates)
        self.match_low_quality = bool(match_low_quality)

    def assign(self, boxes, gt_boxes, gt_labels, gt_ignore=None, box_valid=None):
        """Assign ground truth to boxes.

        Args:
            boxes: [A, 4] (shared, e.g. anchors) or [B, A, 4] (e.g. proposals) xyxy.
            gt_boxes: [B, N, 4] xyxy, padded.
            gt_labels: [B, N] int, -1 = padding.
            gt_ignore: [B, N] bool crowd flags, or None.
            box_valid: [B, A] bool, or None (all valid).
        Returns:
            :class:`AssignResult` with [B, A] gt_inds / max_overlaps / labels;
            max_overlaps is each box's best IoU with the real gts (-1 for crowd-
            ignored boxes, 0 for invalid boxes and images without gt).
        """
        gt_boxes, gt_labels, real, crowd = prepare_gt(gt_boxes, gt_labels, gt_ignore)
        bsz = batch_size_of(gt_boxes)
        boxes = batch_boxes(boxes, bsz)
        if box_valid is None:
            box_valid = tf.ones(tf.shape(boxes)[:2], tf.bool)
        box_valid = tf.cast(box_valid, tf.bool)

        overlaps = pairwise_overlaps(gt_boxes, boxes, "iou")  # [B, N, A]
        overlaps = tf.where(real[:, :, None], overlaps, -1.0)
        if self.ignore_iof_thr > 0:
            if self.ignore_wrt_candidates:
                iof = pairwise_overlaps(boxes, gt_boxes, "iof")  # [B, A, N]
                iof = tf.where(crowd[:, None, :], iof, -1.0)
                ignored = tf.reduce_max(iof, axis=2) > self.ignore_iof_thr  # [B, A]
            else:
                iof = pairwise_overlaps(gt_boxes, boxes, "iof")  # [B, N, A]
                iof = tf.where(crowd[:, :, None], iof, -1.0)
                ignored = tf.reduce_max(iof, axis=1) > self.ignore_iof_thr
            overlaps = tf.where(ignored[:, None, :], -1.0, overlaps)
        # Invalid boxes sit below every valid value, so they never win a max.
        overlaps = tf.where(box_valid[:, None, :], overlaps, -2.0)
        return self.assign_wrt_overlaps(overlaps, gt_labels, real, box_valid)

    def assign_wrt_overlaps(self, overlaps, gt_labels, real, box_valid):
        """Steps 1-4 on precomputed overlaps.

        Args:
            overlaps: [B, N, A] float32; rows of non-real gts must be < 0 and
                columns of invalid boxes below every valid entry.
            gt_labels: [B, N] int32. real: [B, N] bool. box_valid: [B, A] bool.
        Returns:
            :class:`AssignResult`.
        """
        max_ov = tf.reduce_max(overlaps, axis=1)  # [B, A]
        argmax_ov = tf.argmax(overlaps, axis=1, output_type=tf.int32)

        gt_inds = tf.fill(tf.shape(max_ov), -1)
        if isinstance(self.neg_iou_thr, tuple):
            neg = (max_ov >= self.neg_iou_thr[0]) & (max_ov < self.neg_iou_thr[1])
        else:
            neg = (max_ov >= 0) & (max_ov < self.neg_iou_thr)
        gt_inds = tf.where(neg, 0, gt_inds)
        gt_inds = tf.where(max_ov >= self.pos_iou_thr, argmax_ov + 1, gt_inds)

        if self.match_low_quality:
            n = tf.shape(overlaps)[1]
            gt_max = tf.reduce_max(overlaps, axis=2)  # [B, N] (valid boxes dominate)
            # kdet guard: a gt overlapping no box at all (e.g. a zero-area box)
            # matches nothing. mmdet would, with min_pos_iou 0 (RetinaNet, PAA),
            # hand it every box of IoU 0, i.e. almost all anchors.
            cond = real & (gt_max >= self.min_pos_iou) & (gt_max > 0)  # [B, N]
            if self.gt_max_assign_all:
                match = tf.equal(overlaps, gt_max[:, :, None]) & box_valid[:, None, :]
            else:
                gt_argmax = tf.argmax(overlaps, axis=2, output_type=tf.int32)  # [B, N]
                a_idx = tf.range(tf.shape(overlaps)[2], dtype=tf.int32)
                match = tf.equal(a_idx[None, None, :], gt_argmax[:, :, None])
            match = match & cond[:, :, None]  # [B, N, A]
            # The loop over gts in mmdet lets the last matching gt win.
            gt_ids = tf.range(n, dtype=tf.int32)[None, :, None]
            winner = tf.reduce_max(tf.where(match, gt_ids, -1), axis=1)  # [B, A]
            gt_inds = tf.where(winner >= 0, winner + 1, gt_inds)

        has_gt = tf.reduce_any(real, axis=1, keepdims=True)  # [B, 1]
        gt_inds = tf.where(has_gt, gt_inds, 0)
        max_ov = tf.where(has_gt, max_ov, 0.0)
        gt_inds = tf.where(box_valid, gt_inds, -1)
        max_ov = tf.where(box_valid, max_ov, 0.0)
        labels = tf.gather(gt_labels, tf.maximum(gt_inds - 1, 0), batch_dims=1)
        labels = tf.where(gt_inds > 0, labels, -1)
        return AssignResult(gt_inds=gt_inds, max_overlaps=max_ov, labels=labels)

    def get_config(self):
        neg = list(self.neg_iou_thr) if isinstance(self.neg_iou_thr, tuple) else self.neg_iou_thr
        return {"pos_iou_thr": self.pos_iou_thr, "neg_iou_thr": neg,
                "min_pos_iou": self.min_pos_iou, "gt_max_assign_all": self.gt_max_assign_all,
                "ignore_iof_thr": self.ignore_iof_thr,
                "ignore_wrt_candidates": self.ignore_wrt_candidates,
                "match_low_quality": self.match_low_quality}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
