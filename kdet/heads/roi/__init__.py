"""kdet.heads.roi: RoI feature extraction and the R-CNN box / mask heads."""
from kdet.heads.roi.bbox_head import Shared2FCBBoxHead  # noqa: F401
from kdet.heads.roi.mask_head import FCNMaskHead  # noqa: F401
from kdet.heads.roi.roi_extractor import SingleRoIExtractor, map_roi_levels  # noqa: F401
from kdet.heads.roi.standard_roi_head import StandardRoIHead  # noqa: F401
