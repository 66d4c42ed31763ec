"""kdet.losses: MMDetection v2 losses as TF functions plus thin config-carrying objects."""
from kdet.losses.cross_entropy import (  # noqa: F401
    CrossEntropyLoss, binary_cross_entropy, cross_entropy, mask_cross_entropy,
)
from kdet.losses.focal_loss import FocalLoss, sigmoid_focal_loss  # noqa: F401
from kdet.losses.iou_loss import GIoULoss, IoULoss, giou_loss, iou_loss  # noqa: F401
from kdet.losses.l1_loss import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss  # noqa: F401
from kdet.losses.reduction import Loss, weight_reduce_loss  # noqa: F401
