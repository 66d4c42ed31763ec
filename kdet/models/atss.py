"""``ATSS`` (Zhang et al., CVPR 2020): backbone + FPN P3-P7 (extra convs on the P5 output)
+ :class:`kdet.heads.dense.ATSSHead`. Defaults are configs/atss/atss_r50_fpn_1x_coco.py."""
import keras

from kdet.heads.dense.atss_head import ATSSHead
from kdet.models.single_stage import SingleStageDetector


@keras.saving.register_keras_serializable(package="kdet")
class ATSS(SingleStageDetector):
    """ATSS. ``ATSS(backbone="resnet50", num_classes=80)``; see :class:`SingleStageDetector`."""

    loss_names = ("loss_cls", "loss_bbox", "loss_centerness")
    head_class = ATSSHead
    default_neck = dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_output")
