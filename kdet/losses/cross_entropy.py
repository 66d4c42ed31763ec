"""Cross-entropy losses, MMDetection v2's ``cross_entropy``,
``binary_cross_entropy``, ``mask_cross_entropy`` and ``CrossEntropyLoss``
(mmdet/models/losses/cross_entropy_loss.py)."""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses.reduction import Loss, weight_reduce_loss

# torch.nn.functional.cross_entropy's default ignore_index.
DEFAULT_IGNORE_INDEX = -100


def cross_entropy(logits, labels, weight=None, reduction="mean", avg_factor=None,
                  class_weight=None, ignore_index=DEFAULT_IGNORE_INDEX, avg_non_ignore=False):
    """Softmax cross-entropy.

    Args:
        logits: [..., C] unnormalised scores.
        labels: [...] int class ids in [0, C); ``ignore_index`` (and any negative
            id, e.g. kdet's -1 padding) contributes 0.
        weight: [...] per-sample weights, or None.
        reduction, avg_factor: see :func:`weight_reduce_loss` ("mean" without
            avg_factor averages over all samples, ignored ones included, as mmdet).
        class_weight: [C] per-class weights (torch's ``weight=``), or None.
        avg_non_ignore: average over the non-ignored samples only.
    Returns:
        scalar, or [...] for reduction "none".
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = (labels >= 0) & tf.not_equal(labels, int(ignore_index))
    safe = tf.where(valid, labels, 0)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    if class_weight is not None:
        loss = loss * tf.gather(tf.constant(class_weight, tf.float32), safe)
    loss = tf.where(valid, loss, 0.0)
    if avg_factor is None and avg_non_ignore and reduction == "mean":
        avg_factor = tf.reduce_sum(tf.cast(valid, tf.float32))
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def binary_cross_entropy(logits, labels, weight=None, reduction="mean", avg_factor=None,
                         class_weight=None, ignore_index=DEFAULT_IGNORE_INDEX,
                         avg_non_ignore=False):
    """Sigmoid (per-class binary) cross-entropy on logits.

    Args:
        logits: [..., C].
        labels: [...] int ids (one-hot expanded; id C, i.e. background, and
            negative / ``ignore_index`` ids give all-zero targets, the latter also
            zero weight), or float targets [..., C] (entries < 0 or equal to
            ``ignore_index`` are ignored).
        weight: [...] per sample or [..., C] per element, or None.
        class_weight: [C] positive-class weights (torch's ``pos_weight``), or None.
    Returns:
        scalar, or [..., C] for reduction "none".
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    num_classes = logits.shape[-1]
    if labels.shape.rank == logits.shape.rank - 1:
        labels = tf.cast(labels, tf.int32)
        valid = (labels >= 0) & tf.not_equal(labels, int(ignore_index))
        targets = tf.one_hot(tf.where(valid, labels, -1), num_classes, dtype=tf.float32)
        valid = tf.cast(valid, tf.float32)[..., None] * tf.ones_like(logits)
        if weight is not None:
            weight = tf.cast(weight, tf.float32)
            if weight.shape.rank == logits.shape.rank - 1:
                weight = weight[..., None]
    else:
        targets = tf.cast(labels, tf.float32)
        valid = tf.cast((targets >= 0) & tf.not_equal(targets, float(ignore_index)), tf.float32)
        targets = targets * valid
    weight = valid if weight is None else tf.cast(weight, tf.float32) * valid
    if avg_factor is None and avg_non_ignore and reduction == "mean":
        avg_factor = tf.reduce_sum(valid)
    if class_weight is None:
        loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    else:
        loss = tf.nn.weighted_cross_entropy_with_logits(
            labels=targets, logits=logits, pos_weight=tf.constant(class_weight, tf.float32))
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def mask_cross_entropy(mask_logits, mask_targets, labels, weight=None):
    """Per-pixel sigmoid BCE on each RoI's mask of its own class (Mask R-CNN).

    Args:
        mask_logits: [K, H, W, C] NHWC mask logits (C = 1 for class-agnostic heads).
        mask_targets: [K, H, W] binary (or soft) targets.
        labels: [K] int class of each RoI (0 for class-agnostic; negative = padding).
        weight: [K] RoI weights (1 for real positives, 0 for padding), or None.
    Returns:
        Scalar: mean over the pixels of the weighted RoIs (mmdet's 'mean' over
        the positive RoIs); 0 when no RoI has weight.
    """
    mask_logits = tf.cast(mask_logits, tf.float32)
    if mask_logits.shape.rank != 4:
        raise KdetError(f"mask_logits must be [K, H, W, C], got {mask_logits.shape}")
    labels = tf.cast(labels, tf.int32)
    num_classes = mask_logits.shape[-1]
    safe = tf.clip_by_value(labels, 0, num_classes - 1) if num_classes else tf.maximum(labels, 0)
    pred = tf.gather(mask_logits, safe, axis=3, batch_dims=1)  # [K, H, W]
    targets = tf.cast(mask_targets, tf.float32)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=pred)
    if weight is None:
        return weight_reduce_loss(loss, None, "mean")
    w = tf.cast(weight, tf.float32) * tf.cast(labels >= 0, tf.float32)
    pixels = tf.cast(tf.shape(loss)[1] * tf.shape(loss)[2], tf.float32)
    total = tf.reduce_sum(loss * w[:, None, None])
    return tf.math.divide_no_nan(total, tf.reduce_sum(w) * pixels)


@keras.saving.register_keras_serializable(package="kdet")
class CrossEntropyLoss(Loss):
    """mmdet's ``CrossEntropyLoss``: softmax CE, sigmoid BCE or mask BCE.

    Args:
        use_sigmoid: per-class sigmoid BCE (e.g. RPN's objectness, mmdet
            ``use_sigmoid=True``) instead of softmax CE (R-CNN classifier).
        use_mask: Mask R-CNN mask loss (:func:`mask_cross_entropy`).
        reduction: "none" | "mean" | "sum".
        class_weight: [C] class weights, or None.
        ignore_index: label to ignore (None = -100).
        loss_weight: multiplier (mmdet: 1.0 for RPN/R-CNN cls and mask).
        avg_non_ignore: average over non-ignored samples only.
    Call:
        ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``;
        for ``use_mask`` the third argument is the RoIs' labels:
        ``loss(mask_logits, mask_targets, labels, roi_weight=roi_weights)``.
    """

    def __init__(self, use_sigmoid=False, use_mask=False, reduction="mean", class_weight=None,
                 ignore_index=None, loss_weight=1.0, avg_non_ignore=False):
        super().__init__(reduction, loss_weight)
        if use_sigmoid and use_mask:
            raise KdetError("CrossEntropyLoss: use_sigmoid and use_mask are exclusive")
        if use_mask and class_weight is not None:
            raise KdetError("CrossEntropyLoss: class_weight is not supported with use_mask")
        self.use_sigmoid = bool(use_sigmoid)
        self.use_mask = bool(use_mask)
        self.class_weight = None if class_weight is None else [float(c) for c in class_weight]
        self.ignore_index = ignore_index
        self.avg_non_ignore = bool(avg_non_ignore)

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None,
                 ignore_index=None, roi_weight=None):
        if self.use_mask:
            # weight is the RoIs' labels here (mmdet passes them the same way).
            return self.loss_weight * mask_cross_entropy(pred, target, weight, roi_weight)
        reduction = self._reduction(reduction_override)
        if ignore_index is None:
            ignore_index = self.ignore_index
        if ignore_index is None:
            ignore_index = DEFAULT_IGNORE_INDEX
        fn = binary_cross_entropy if self.use_sigmoid else cross_entropy
        return self.loss_weight * fn(pred, target, weight, reduction, avg_factor,
                                     self.class_weight, ignore_index, self.avg_non_ignore)

    def get_config(self):
        config = super().get_config()
        config.update({"use_sigmoid": self.use_sigmoid, "use_mask": self.use_mask,
                       "class_weight": self.class_weight, "ignore_index": self.ignore_index,
                       "avg_non_ignore": self.avg_non_ignore})
        return config
