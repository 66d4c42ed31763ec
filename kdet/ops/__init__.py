"""kdet.ops."""
from kdet.ops.boxes import (  # noqa: F401  (box ops)
    BOX_FORMATS, aligned_giou, aligned_iou, aligned_overlaps, box_area, clip_boxes,
    convert_format, flip_boxes, pairwise_giou, pairwise_iof, pairwise_iou, pairwise_overlaps,
)
from kdet.ops._dispatch import (  # noqa: F401  (custom op <-> pure-TF twin switch)
    get_implementation, in_xla_context, set_implementation, use_implementation,
)
from kdet.ops.masks import paste_masks, paste_masks_numpy, resize_masks_numpy  # noqa: F401
from kdet.ops.roi_align import roi_align, roi_align_tf  # noqa: F401
from kdet.ops.deform_conv import deform_conv2d  # noqa: F401
from kdet.ops.nms import batched_nms, batched_nms_padded, nms, nms_padded  # noqa: F401
