"""``PAA`` (Kim & Lee, ECCV 2020): backbone + FPN P3-P7 (extra convs on the P5 output)
+ :class:`kdet.heads.dense.PAAHead` (probabilistic anchor assignment with an in-graph GMM,
IoU prediction, score voting). Defaults are configs/paa/paa_r50_fpn_1x_coco.py."""
import keras

from kdet.heads.dense.paa_head import PAAHead
from kdet.models.single_stage import SingleStageDetector


@keras.saving.register_keras_serializable(package="kdet")
class PAA(SingleStageDetector):
    """PAA. ``PAA(backbone="resnet50", num_classes=80, head={"score_voting": False})``; see
    :class:`SingleStageDetector` and :class:`kdet.heads.dense.PAAHead`."""

    loss_names = ("loss_cls", "loss_bbox", "loss_iou")
    head_class = PAAHead
    default_neck = dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_output")
