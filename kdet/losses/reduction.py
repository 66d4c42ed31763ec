"""Weighting and reduction shared by every kdet loss: MMDetection v2's
``weight_reduce_loss`` (mmdet/models/losses/utils.py)."""
import tensorflow as tf

from kdet.errors import KdetError

REDUCTIONS = ("none", "mean", "sum")
# mmdet adds torch.finfo(torch.float32).eps to avg_factor, so a batch without
# positives (avg_factor 0) gives 0 instead of NaN.
_AVG_EPS = 1.1920928955078125e-07


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise KdetError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None):
    """Apply element-wise weights, then reduce.

    Args:
        loss: element-wise loss, any shape.
        weight: None or weights broadcastable to ``loss``.
        reduction: "none" | "mean" | "sum".
        avg_factor: None, or a number / scalar tensor: "mean" then means
            ``sum(loss * weight) / (avg_factor + eps)`` (e.g. the number of
            positives) instead of the plain element mean.
    Returns:
        A scalar (mean / sum) or ``loss``'s shape (none), float32.
    """
    check_reduction(reduction)
    loss = tf.cast(loss, tf.float32)
    if weight is not None:
        loss = loss * tf.cast(weight, tf.float32)
    if avg_factor is None:
        if reduction == "mean":  # 0 (not NaN) for an empty loss, like mmdet's L1Loss guard
            return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.cast(tf.size(loss), tf.float32))
        if reduction == "sum":
            return tf.reduce_sum(loss)
        return loss
    if reduction == "mean":
        return tf.reduce_sum(loss) / (tf.cast(avg_factor, tf.float32) + _AVG_EPS)
    if reduction == "sum":
        raise KdetError('avg_factor can not be used with reduction="sum"')
    return loss


class Loss:
    """Base of kdet's loss objects: ``loss_weight`` x a reduced loss function.

    Subclasses implement :meth:`elementwise` (or override ``__call__``) and list
    their constructor arguments in :meth:`get_config`.
    """

    def __init__(self, reduction="mean", loss_weight=1.0):
        self.reduction = check_reduction(reduction)
        self.loss_weight = float(loss_weight)

    def _reduction(self, reduction_override):
        return check_reduction(reduction_override) if reduction_override else self.reduction

    def get_config(self):
        return {"reduction": self.reduction, "loss_weight": self.loss_weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
