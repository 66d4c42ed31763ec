"""``RetinaNet`` (Lin et al., ICCV 2017): backbone + FPN P3-P7 (extra convs on the input C5)
+ :class:`kdet.heads.dense.RetinaHead`. Defaults are configs/retinanet/retinanet_r50_fpn_1x_coco.py;
the seed's RegNet rows (configs/regnet/retinanet_regnetx-*_fpn_1x_coco.py) differ only in
the backbone (and the recipe: lr 0.02, gradient clipping 35)."""
import keras

from kdet.heads.dense.retina_head import RetinaHead
from kdet.models.single_stage import SingleStageDetector


@keras.saving.register_keras_serializable(package="kdet")
class RetinaNet(SingleStageDetector):
    """RetinaNet. ``RetinaNet(backbone="regnetx_800mf", num_classes=80)``; see
    :class:`SingleStageDetector` for the arguments and :class:`RetinaHead` for ``head``."""

    loss_names = ("loss_cls", "loss_bbox")
    head_class = RetinaHead
    default_neck = dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_input")
