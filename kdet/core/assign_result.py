"""The result of assigning ground truth to boxes, shared by every assigner."""
from typing import NamedTuple

import tensorflow as tf

from kdet.errors import KdetError


class AssignResult(NamedTuple):
    """Per-box assignment, batched and padded (a ``tf.nest`` structure).

    Attributes:
        gt_inds: [B, A] int32. -1: ignored (neither positive nor negative; also
            every invalid box), 0: negative (background), k >= 1: positive,
            matched to ground-truth slot k - 1 of the padded ``[B, N]`` arrays
            (MMDetection's 1-based ``gt_inds``; kdet indexes the padded slots,
            so crowd and padding slots simply never appear).
        max_overlaps: [B, A] float32, the IoU that decided the assignment
            (see each assigner; -1 where a box was ignored by crowd IoF).
        labels: [B, A] int32 class id of the matched ground truth, -1 elsewhere.
    """
    gt_inds: tf.Tensor
    max_overlaps: tf.Tensor
    labels: tf.Tensor

    @property
    def pos_mask(self):
        """[B, A] bool, positive boxes."""
        return self.gt_inds > 0

    @property
    def neg_mask(self):
        """[B, A] bool, negative boxes."""
        return tf.equal(self.gt_inds, 0)

    def gather_gt(self, gt_values):
        """Per-box values of the matched ground truth.

        Args:
            gt_values: [B, N, ...] per-slot values (e.g. boxes [B, N, 4]).
        Returns:
            [B, A, ...]; rows of non-positive boxes hold slot 0's values (mask them
            with :attr:`pos_mask`).
        """
        idx = tf.maximum(self.gt_inds - 1, 0)
        return tf.gather(gt_values, idx, batch_dims=1)


def prepare_gt(gt_boxes, gt_labels, gt_ignore=None):
    """Validate padded ground truth; split real objects from crowd regions.

    Args:
        gt_boxes: [B, N, 4] xyxy.
        gt_labels: [B, N] int, -1 = padding.
        gt_ignore: [B, N] bool crowd flags, or None.
    Returns:
        (boxes float32 [B, N, 4], labels int32 [B, N], real [B, N] bool (label >= 0
        and not crowd), crowd [B, N] bool (label >= 0 and crowd)).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    if gt_boxes.shape.rank != 3 or gt_boxes.shape[-1] not in (4, None):
        raise KdetError(f"gt_boxes must be [B, N, 4], got {gt_boxes.shape}")
    if gt_labels.shape.rank != 2:
        raise KdetError(f"gt_labels must be [B, N] (-1 = padding), got {gt_labels.shape}")
    present = gt_labels >= 0
    if gt_ignore is None:
        crowd = tf.zeros_like(present)
    else:
        gt_ignore = tf.convert_to_tensor(gt_ignore)
        if gt_ignore.shape.rank != 2:
            raise KdetError(f"gt_ignore must be [B, N] bool, got {gt_ignore.shape}")
        crowd = tf.logical_and(present, tf.cast(gt_ignore, tf.bool))
    real = tf.logical_and(present, tf.logical_not(crowd))
    return gt_boxes, gt_labels, real, crowd


def batch_size_of(tensor):
    """Static batch size of a [B, ...] tensor when known, else a scalar tensor."""
    b = tensor.shape[0]
    return int(b) if b is not None else tf.shape(tensor)[0]


def batch_boxes(boxes, batch_size):
    """[A, 4] (shared by the batch, e.g. anchors) or [B, A, 4] -> [B, A, 4] float32."""
    boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank == 2:
        if isinstance(batch_size, int) and boxes.shape.is_fully_defined():
            shape = [batch_size] + boxes.shape.as_list()
        else:
            shape = tf.concat([[batch_size], tf.shape(boxes)], 0)
        boxes = tf.broadcast_to(boxes[None], shape)
    elif boxes.shape.rank != 3:
        raise KdetError(f"boxes must be [A, 4] or [B, A, 4], got {boxes.shape}")
    return boxes
