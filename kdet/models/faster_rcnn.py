"""``FasterRCNN`` (Ren et al., NeurIPS 2015) with FPN (Lin et al., CVPR 2017): MMDetection v2's
``faster_rcnn_r50_fpn.py`` and the RegNet rows of seed 000 (``faster_rcnn_regnetx-*``)."""
import keras

from kdet.models.two_stage import TwoStageDetector


@keras.saving.register_keras_serializable(package="kdet")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN: RPN + Shared2FC box head. Arguments: :class:`TwoStageDetector`.

    >>> model = kdet.models.FasterRCNN("regnetx_3.2gf", num_classes=80)   # doctest: +SKIP
    >>> model.compile(optimizer=kdet.training.sgd(0.02, weight_decay=5e-5))
    >>> model.fit(ds)            # progress bar: loss, rpn_cls, rpn_bbox, cls, bbox
    """

    loss_names = ("rpn_cls", "rpn_bbox", "cls", "bbox")
    with_mask = False
