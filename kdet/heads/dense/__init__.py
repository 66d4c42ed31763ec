"""kdet.heads.dense: dense (per-location) heads on a shared base with override hooks."""
from kdet.heads.dense.base import (  # noqa: F401
    BaseDenseHead, DEFAULT_TEST_CFG, flatten_level, flatten_levels, multiclass_nms, topk_pairs,
)
from kdet.heads.dense.anchor_head import AnchorHead, Anchors, DenseTargets  # noqa: F401
from kdet.heads.dense.retina_head import RetinaHead  # noqa: F401
from kdet.heads.dense.atss_head import ATSSHead  # noqa: F401
from kdet.heads.dense.paa_head import PAAHead  # noqa: F401
from kdet.heads.dense.rpn_head import RPNHead  # noqa: F401
