"""kdet.heads."""
from kdet.heads.dense.rpn_head import RPNHead  # noqa: F401,E402
from kdet.heads.roi import (  # noqa: F401,E402
    FCNMaskHead, Shared2FCBBoxHead, SingleRoIExtractor, StandardRoIHead,
)
