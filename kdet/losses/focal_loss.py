"""Sigmoid focal loss (Lin et al., ICCV 2017, arXiv:1708.02002), MMDetection v2's
``py_sigmoid_focal_loss`` / ``FocalLoss`` (mmdet/models/losses/focal_loss.py)."""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses.reduction import Loss, weight_reduce_loss


def sigmoid_focal_loss(logits, targets, weight=None, gamma=2.0, alpha=0.25, reduction="mean",
                       avg_factor=None):
    """Focal loss on per-class sigmoid logits.

    ``FL = BCE(logits, t) * (alpha t + (1 - alpha)(1 - t)) * pt ** gamma`` with
    ``pt = (1 - p) t + p (1 - t)``, ``p = sigmoid(logits)``.

    Args:
        logits: [..., C].
        targets: [...] int labels, one-hot expanded (id C = background and
            negative ids give all-zero targets), or [..., C] float targets.
        weight: [...] per-sample (broadcast over classes) or [..., C], or None.
        gamma, alpha: RetinaNet's 2.0 and 0.25.
        reduction, avg_factor: see :func:`weight_reduce_loss` (RetinaNet: sum over
            anchors / number of positives).
    Returns:
        scalar, or [..., C] for reduction "none".
    """
    logits = tf.cast(logits, tf.float32)
    targets = tf.convert_to_tensor(targets)
    if targets.shape.rank == logits.shape.rank - 1:
        t = tf.one_hot(tf.cast(targets, tf.int32), logits.shape[-1], dtype=tf.float32)
    else:
        t = tf.cast(targets, tf.float32)
    p = tf.sigmoid(logits)
    pt = (1.0 - p) * t + p * (1.0 - t)
    focal_weight = (alpha * t + (1.0 - alpha) * (1.0 - t)) * tf.pow(pt, gamma)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=logits) * focal_weight
    if weight is not None:
        weight = tf.cast(weight, tf.float32)
        if weight.shape.rank == loss.shape.rank - 1:
            weight = weight[..., None]
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@keras.saving.register_keras_serializable(package="kdet")
class FocalLoss(Loss):
    """mmdet's ``FocalLoss`` (sigmoid only).

    Args:
        use_sigmoid: must be True (mmdet supports only the sigmoid form too).
        gamma, alpha: 2.0 and 0.25 (RetinaNet).
        reduction: "none" | "mean" | "sum".
        loss_weight: multiplier (RetinaNet: 1.0).
    Call:
        ``loss(logits, targets, weight=None, avg_factor=None, reduction_override=None)``.
    """

    def __init__(self, use_sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean", loss_weight=1.0):
        super().__init__(reduction, loss_weight)
        if not use_sigmoid:
            raise KdetError("FocalLoss only supports use_sigmoid=True")
        self.use_sigmoid = True
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        return self.loss_weight * sigmoid_focal_loss(
            pred, target, weight, self.gamma, self.alpha, self._reduction(reduction_override),
            avg_factor)

    def get_config(self):
        config = super().get_config()
        config.update({"use_sigmoid": True, "gamma": self.gamma, "alpha": self.alpha})
        return config
