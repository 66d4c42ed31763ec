"""kdet.core: anchor generators, box coders, assigners and samplers (static shapes)."""
from kdet.core.anchor_generator import AnchorGenerator, anchor_inside_flags  # noqa: F401
from kdet.core.assign_result import AssignResult, prepare_gt  # noqa: F401
from kdet.core.atss_assigner import ATSSAssigner  # noqa: F401
from kdet.core.bbox_coder import DeltaXYWHBBoxCoder  # noqa: F401
from kdet.core.max_iou_assigner import MaxIoUAssigner  # noqa: F401
from kdet.core.random_sampler import (  # noqa: F401
    RandomSampler, SamplingResult, add_gt_as_proposals,
)
