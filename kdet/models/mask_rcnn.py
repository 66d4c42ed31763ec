"""``MaskRCNN`` (He et al., ICCV 2017) with FPN: MMDetection v2's ``mask_rcnn_r50_fpn.py`` and
the RegNet rows of seed 000 (``mask_rcnn_regnetx-*``)."""
import copy

import keras

from kdet.models.two_stage import DEFAULT_TRAIN_CFG, TwoStageDetector

# mmdet v2.x configs/_base_/models/mask_rcnn_r50_fpn.py: the R-CNN assigner also takes
# low-quality matches (faster_rcnn_r50_fpn.py does not).
MASK_RCNN_TRAIN_CFG = copy.deepcopy(DEFAULT_TRAIN_CFG)
MASK_RCNN_TRAIN_CFG["rcnn"]["assigner"]["match_low_quality"] = True


@keras.saving.register_keras_serializable(package="kdet")
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN: Faster R-CNN + a 4-conv FCN mask head (28x28, class-specific).
    Arguments: :class:`TwoStageDetector`; predictions add ``masks`` [B, 100, 28, 28]
    (probabilities in box coordinates; ``kdet.evaluation`` pastes them).

    >>> model = kdet.models.MaskRCNN("regnetx_3.2gf")   # doctest: +SKIP
    >>> model.fit(ds)            # progress bar: loss, rpn_cls, rpn_bbox, cls, bbox, mask
    """

    loss_names = ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask")
    with_mask = True
    _default_train_cfg = MASK_RCNN_TRAIN_CFG
