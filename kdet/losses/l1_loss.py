"""L1 and smooth-L1 losses, MMDetection v2's ``L1Loss`` / ``SmoothL1Loss``
(mmdet/models/losses/smooth_l1_loss.py)."""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses.reduction import Loss, weight_reduce_loss


def l1_loss(pred, target, weight=None, reduction="mean", avg_factor=None):
    """|pred - target| element-wise, weighted and reduced. pred, target: same shape
    (e.g. [..., 4] deltas); weight broadcastable (e.g. [..., 4] bbox weights)."""
    loss = tf.abs(tf.cast(pred, tf.float32) - tf.cast(target, tf.float32))
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def smooth_l1_loss(pred, target, beta=1.0, weight=None, reduction="mean", avg_factor=None):
    """Huber-style smooth L1: 0.5 d^2 / beta for d < beta, else d - 0.5 beta."""
    if beta <= 0:
        raise KdetError(f"smooth L1 beta must be > 0, got {beta}")
    diff = tf.abs(tf.cast(pred, tf.float32) - tf.cast(target, tf.float32))
    loss = tf.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@keras.saving.register_keras_serializable(package="kdet")
class L1Loss(Loss):
    """mmdet's ``L1Loss`` (Faster/Mask R-CNN RegNet configs: RPN and R-CNN box
    regression, loss_weight 1.0; RetinaNet RegNet configs too).
    Call: ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``."""

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        return self.loss_weight * l1_loss(pred, target, weight, self._reduction(reduction_override),
                                          avg_factor)


@keras.saving.register_keras_serializable(package="kdet")
class SmoothL1Loss(Loss):
    """mmdet's ``SmoothL1Loss(beta=1.0)``.
    Call: ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``."""

    def __init__(self, beta=1.0, reduction="mean", loss_weight=1.0):
        super().__init__(reduction, loss_weight)
        if beta <= 0:
            raise KdetError(f"smooth L1 beta must be > 0, got {beta}")
        self.beta = float(beta)

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        return self.loss_weight * smooth_l1_loss(
            pred, target, self.beta, weight, self._reduction(reduction_override), avg_factor)

    def get_config(self):
        config = super().get_config()
        config["beta"] = self.beta
        return config
