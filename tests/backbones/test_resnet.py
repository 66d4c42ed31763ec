"""ResNet / ResNeXt: parameter counts against torchvision/timm, styles, errors."""
import numpy as np
import pytest

from kdet.backbones import ResNet, ResNeXt
from kdet.errors import KdetError
from kdet.models import ImageClassifier
from kdet.utils import count_params

# With a 1000-class fc: torchvision's documented num_params (resnet50, resnet101,
# resnext101_64x4d) and timm's resnext101_32x4d (44,177,704).
REFERENCE_PARAMS = {"resnet50": 25_557_032, "resnet101": 44_549_160,
                    "resnext101_32x4d": 44_177_704, "resnext101_64x4d": 83_455_272}


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_param_counts(name):
    assert count_params(ImageClassifier(name, num_classes=1000)) == REFERENCE_PARAMS[name]


def test_outputs_and_channels():
    m = ResNet(50)
    assert m.out_channels == [256, 512, 1024, 2048] and m.out_strides == [4, 8, 16, 32]
    outs = m(np.zeros((1, 64, 64, 3), "float32"))
    assert [o.shape[1] for o in outs] == [16, 8, 4, 2]


def test_style_moves_the_stride():
    py = ResNet(50, style="pytorch", out_indices=(1,))
    caffe = ResNet(50, style="caffe", out_indices=(1,))
    assert py.get_layer("layer2.0.conv2").strides == (2, 2)
    assert py.get_layer("layer2.0.conv1").strides == (1, 1)
    assert caffe.get_layer("layer2.0.conv1").strides == (2, 2)
    assert caffe.get_layer("layer2.0.conv2").strides == (1, 1)


def test_resnext_groups():
    m = ResNeXt(101, groups=32, base_width=4, out_indices=(0,))
    conv2 = m.get_layer("layer1.0.conv2")
    assert conv2.groups == 32 and conv2.filters == 128


def test_bad_depth_and_style():
    with pytest.raises(KdetError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(KdetError, match="style"):
        ResNet(50, style="tf")
