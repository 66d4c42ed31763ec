"""RandomSampler: MMDetection v2's ``RandomSampler`` (+ ``BaseSampler.sample``) with
static shapes.

Per image: up to ``int(num * pos_fraction)`` positives drawn uniformly without
replacement, then ``num - #positives`` negatives (capped at
``int(neg_pos_ub * max(1, #positives))`` when ``neg_pos_ub >= 0``). A uniform random
subset is the top-k of i.i.d. uniform scores over the candidates, which keeps
shapes static for XLA. Like mmdet (``.unique()``), sampled positives and negatives
are each in ascending box order, positives first.

With ``add_gt_as_proposals`` the (non-crowd) ground-truth boxes are prepended to
the proposals as positives of themselves (mmdet's ``AssignResult.add_gt_``).
"""
from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from kdet.core.assign_result import AssignResult, prepare_gt
from kdet.errors import KdetError


class SamplingResult(NamedTuple):
    """Sampled boxes, padded to ``num`` per image (a ``tf.nest`` structure).

    Attributes:
        indices: [B, num] int32 box indices (into the boxes the assignment covers,
            gts first when they were prepended); 0 in invalid slots.
        valid: [B, num] bool, slot holds a sample (first num_pos + num_neg slots).
        is_pos: [B, num] bool, valid positive (the first num_pos slots).
        gt_inds: [B, num] int32 assignment of the samples (>= 1 positive, 0
            negative, -1 invalid slot).
        labels: [B, num] int32 gt class of positives, -1 elsewhere.
        num_pos: [B] int32. num_neg: [B] int32.
        boxes: [B, num, 4] sampled boxes, or None when no boxes were given.
    """
    indices: tf.Tensor
    valid: tf.Tensor
    is_pos: tf.Tensor
    gt_inds: tf.Tensor
    labels: tf.Tensor
    num_pos: tf.Tensor
    num_neg: tf.Tensor
    boxes: Optional[tf.Tensor] = None

    @property
    def is_neg(self):
        """[B, num] bool, valid negative slots."""
        return self.valid & tf.logical_not(self.is_pos)

    def gather(self, values):
        """Sampled rows of per-box values: [B, A, ...] -> [B, num, ...]."""
        return tf.gather(values, self.indices, batch_dims=1)

    def dense_masks(self, num_boxes):
        """Sampled positives / negatives as [B, num_boxes] bool masks (e.g. for
        per-anchor label weights in an RPN)."""
        shape = tf.shape(self.indices)
        b = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
        idx = tf.stack([b, self.indices], axis=-1)
        out = tf.stack([shape[0], num_boxes])
        pos = tf.scatter_nd(idx, tf.cast(self.is_pos, tf.int32), out) > 0
        neg = tf.scatter_nd(idx, tf.cast(self.is_neg, tf.int32), out) > 0
        return pos, neg


def add_gt_as_proposals(proposals, assign_result, gt_boxes, gt_labels, gt_ignore=None):
    """Prepend the ground truth to proposals and to their assignment.

    Args:
        proposals: [B, P, 4] xyxy.
        assign_result: :class:`AssignResult` of the proposals ([B, P]).
        gt_boxes: [B, N, 4]; gt_labels: [B, N] (-1 padding); gt_ignore: [B, N] or None.
    Returns:
        (boxes [B, N + P, 4], AssignResult [B, N + P]): slot i < N is gt slot i,
        assigned to itself (gt_inds i + 1, IoU 1, its label) when it is a real
        object; padding and crowd slots are ignored (-1) and never sampled.
    """
    gt_boxes, gt_labels, real, _ = prepare_gt(gt_boxes, gt_labels, gt_ignore)
    proposals = tf.cast(proposals, tf.float32)
    if proposals.shape.rank != 3:
        raise KdetError(f"proposals must be [B, P, 4], got {proposals.shape}")
    self_inds = tf.range(1, tf.shape(gt_labels)[1] + 1, dtype=tf.int32)[None, :]
    gt_inds = tf.where(real, self_inds, -1)
    ones = tf.where(real, 1.0, 0.0)
    labels = tf.where(real, gt_labels, -1)
    boxes = tf.concat([gt_boxes, proposals], axis=1)
    result = AssignResult(
        gt_inds=tf.concat([gt_inds, tf.cast(assign_result.gt_inds, tf.int32)], 1),
        max_overlaps=tf.concat([ones, tf.cast(assign_result.max_overlaps, tf.float32)], 1),
        labels=tf.concat([labels, tf.cast(assign_result.labels, tf.int32)], 1))
    return boxes, result


class RandomSampler:
    """Static-shape random sampling of positives and negatives.

    Args:
        num: samples per image (mmdet: RPN 256, R-CNN 512).
        pos_fraction: target fraction of positives (0.5 RPN, 0.25 R-CNN).
        neg_pos_ub: cap negatives at ``neg_pos_ub * max(1, #pos)``; -1 disables.
        add_gt_as_proposals: prepend gts as proposals in :meth:`sample` (R-CNN:
            True; RPN: False).
        seed: int seed of the internal ``keras.random.SeedGenerator`` (its state
            is a variable, :attr:`seed_generator`; track it in the owning layer).
    """

    def __init__(self, num, pos_fraction, neg_pos_ub=-1, add_gt_as_proposals=True, seed=None):
        if int(num) < 1:
            raise KdetError(f"num must be >= 1, got {num}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise KdetError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = float(neg_pos_ub)
        self.add_gt_as_proposals = bool(add_gt_as_proposals)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def num_expected_pos(self):
        """int(num * pos_fraction), the most positives per image."""
        return int(self.num * self.pos_fraction)

    def _uniform(self, shape, seed, salt):
        """U[0, 1) scores: a fresh seed from the generator per draw, or the given
        stateless seed + ``salt``; replicas of a distribution strategy get
        distinct streams (their replica id shifts the seed's first word)."""
        if seed is None:
            seed = tf.cast(self.seed_generator.next(), tf.int64)  # unique per draw
        else:
            seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
            if seed.shape.rank == 0:
                seed = tf.stack([seed, tf.constant(0, tf.int64)])
            seed = seed + tf.constant([0, salt], tf.int64)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
            seed = seed + tf.stack([replica * 1000003, tf.constant(0, tf.int64)])
        return tf.random.stateless_uniform(shape, seed=seed)

    def sample(self, assign_result, boxes=None, gt_boxes=None, gt_labels=None, gt_ignore=None,
               seed=None):
        """Sample positives and negatives of an assignment.

        Args:
            assign_result: :class:`AssignResult`, [B, P].
            boxes: [B, P, 4] proposals (or None: only indices are returned).
            gt_boxes, gt_labels, gt_ignore: the padded ground truth; needed when
                ``add_gt_as_proposals`` (then indices address gts-then-proposals).
            seed: optional int or [2] int seed for a stateless, reproducible draw;
                default draws from :attr:`seed_generator`.
        Returns:
            :class:`SamplingResult` with [B, num] fields.
        """
        if self.add_gt_as_proposals:
            if boxes is None or gt_boxes is None or gt_labels is None:
                raise KdetError("add_gt_as_proposals needs boxes, gt_boxes and gt_labels")
            boxes, assign_result = add_gt_as_proposals(
                boxes, assign_result, gt_boxes, gt_labels, gt_ignore)
        gt_inds = tf.cast(assign_result.gt_inds, tf.int32)
        if gt_inds.shape.rank != 2:
            raise KdetError(f"assign_result.gt_inds must be [B, P], got {gt_inds.shape}")
        num, kp = self.num, self.num_expected_pos
        shape = tf.shape(gt_inds)

        pos_idx, pos_ok = self._draw(gt_inds > 0, kp, self._uniform(shape, seed, 1))
        num_pos = tf.reduce_sum(tf.cast(pos_ok, tf.int32), axis=1)  # [B]
        num_neg_expected = num - num_pos
        if self.neg_pos_ub >= 0:
            ub = tf.cast(tf.floor(self.neg_pos_ub * tf.cast(tf.maximum(num_pos, 1), tf.float32)),
                         tf.int32)
            num_neg_expected = tf.minimum(num_neg_expected, ub)
        neg_idx, neg_ok = self._draw(tf.equal(gt_inds, 0), num, self._uniform(shape, seed, 2))
        neg_ok = neg_ok & (tf.range(num)[None, :] < num_neg_expected[:, None])
        num_neg = tf.reduce_sum(tf.cast(neg_ok, tf.int32), axis=1)
        pos_idx = _sort_valid(pos_idx, pos_ok)
        neg_idx = _sort_valid(neg_idx, neg_ok)

        # Slot j: the j-th positive, then the (j - num_pos)-th negative.
        slot = tf.broadcast_to(tf.range(num)[None, :], [shape[0], num])  # [B, num]
        is_pos = slot < num_pos[:, None]
        valid = slot < (num_pos + num_neg)[:, None]
        if kp > 0:
            from_pos = tf.gather(pos_idx, tf.minimum(slot, kp - 1), batch_dims=1)
        else:
            from_pos = tf.zeros_like(slot)
        from_neg = tf.gather(neg_idx, tf.clip_by_value(slot - num_pos[:, None], 0, num - 1),
                             batch_dims=1)
        indices = tf.where(is_pos, from_pos, from_neg)
        indices = tf.where(valid, indices, 0)

        s_gt = tf.gather(gt_inds, indices, batch_dims=1)
        s_gt = tf.where(valid, s_gt, -1)
        s_labels = tf.gather(tf.cast(assign_result.labels, tf.int32), indices, batch_dims=1)
        s_labels = tf.where(is_pos, s_labels, -1)
        s_boxes = None if boxes is None else tf.gather(tf.cast(boxes, tf.float32), indices,
                                                      batch_dims=1)
        return SamplingResult(indices=indices, valid=valid, is_pos=is_pos, gt_inds=s_gt,
                              labels=s_labels, num_pos=num_pos, num_neg=num_neg, boxes=s_boxes)

    @staticmethod
    def _draw(candidates, k, scores):
        """Up to k random candidates per row: ([B, k] indices, [B, k] valid)."""
        if k == 0:
            b = tf.shape(candidates)[0]
            return tf.zeros([b, 0], tf.int32), tf.zeros([b, 0], tf.bool)
        scores = tf.where(candidates, scores, -1.0)
        p = candidates.shape[1]
        if p is None or p < k:  # top_k needs k <= width: pad with non-candidates
            scores = tf.concat([scores, -tf.ones([tf.shape(scores)[0], k], tf.float32)], 1)
        vals, idx = tf.math.top_k(scores, k=k)
        return idx, vals >= 0.0

    def get_config(self):
        return {"num": self.num, "pos_fraction": self.pos_fraction, "neg_pos_ub": self.neg_pos_ub,
                "add_gt_as_proposals": self.add_gt_as_proposals, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


def _sort_valid(idx, ok):
    """Sort each row's valid indices ascending, keeping them in the first slots."""
    if idx.shape[1] == 0:
        return idx
    big = tf.int32.max
    return tf.sort(tf.where(ok, idx, big), axis=1)
