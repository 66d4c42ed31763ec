"""IoU and GIoU box losses, MMDetection v2's ``IoULoss`` / ``GIoULoss``
(mmdet/models/losses/iou_loss.py)."""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses.reduction import Loss, weight_reduce_loss
from kdet.ops.boxes import aligned_overlaps

_IOU_MODES = ("linear", "square", "log")


def _box_weight(weight, pred):
    """mmdet: a per-coordinate weight [..., 4] is averaged to a per-box one."""
    if weight is None:
        return None
    weight = tf.cast(weight, tf.float32)
    if weight.shape.rank == tf.convert_to_tensor(pred).shape.rank:
        weight = tf.reduce_mean(weight, axis=-1)
    return weight


def iou_loss(pred, target, weight=None, mode="log", eps=1e-6, reduction="mean", avg_factor=None):
    """IoU loss of aligned xyxy boxes.

    Args:
        pred, target: [..., 4] xyxy boxes.
        weight: [...] per box (or [..., 4], averaged over the last axis), or None.
        mode: "log" (-log IoU, mmdet's default), "linear" (1 - IoU), "square" (1 - IoU^2).
        eps: IoU floor (and union floor), 1e-6.
    Returns:
        scalar, or [...] for reduction "none".
    """
    if mode not in _IOU_MODES:
        raise KdetError(f"IoU loss mode must be one of {_IOU_MODES}, got {mode!r}")
    ious = tf.maximum(aligned_overlaps(pred, target, "iou", eps=eps), eps)
    if mode == "linear":
        loss = 1.0 - ious
    elif mode == "square":
        loss = 1.0 - ious * ious
    else:
        loss = -tf.math.log(ious)
    return weight_reduce_loss(loss, _box_weight(weight, pred), reduction, avg_factor)


def giou_loss(pred, target, weight=None, eps=1e-6, reduction="mean", avg_factor=None):
    """1 - GIoU of aligned xyxy boxes [..., 4] (Rezatofighi et al., CVPR 2019)."""
    loss = 1.0 - aligned_overlaps(pred, target, "giou", eps=eps)
    return weight_reduce_loss(loss, _box_weight(weight, pred), reduction, avg_factor)


@keras.saving.register_keras_serializable(package="kdet")
class IoULoss(Loss):
    """mmdet's ``IoULoss(mode='log', eps=1e-6)``.
    Call: ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``."""

    def __init__(self, mode="log", eps=1e-6, reduction="mean", loss_weight=1.0):
        super().__init__(reduction, loss_weight)
        if mode not in _IOU_MODES:
            raise KdetError(f"IoU loss mode must be one of {_IOU_MODES}, got {mode!r}")
        self.mode = mode
        self.eps = float(eps)

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        return self.loss_weight * iou_loss(pred, target, weight, self.mode, self.eps,
                                           self._reduction(reduction_override), avg_factor)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="kdet")
class GIoULoss(Loss):
    """mmdet's ``GIoULoss(eps=1e-6)`` (ATSS / PAA configs: loss_weight 2.0 and 1.3).
    Call: ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``."""

    def __init__(self, eps=1e-6, reduction="mean", loss_weight=1.0):
        super().__init__(reduction, loss_weight)
        self.eps = float(eps)

    def __call__(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        return self.loss_weight * giou_loss(pred, target, weight, self.eps,
                                            self._reduction(reduction_override), avg_factor)

    def get_config(self):
        config = super().get_config()
        config["eps"] = self.eps
        return config
