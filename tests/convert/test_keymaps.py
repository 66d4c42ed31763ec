"""Key maps: pycls / torchvision / mmdet / mmcls names -> kdet names, and pycls <-> mmdet."""
import numpy as np
import pytest

from kdet.convert import keymaps, mmdet_to_pycls, pycls_to_mmdet
from kdet.errors import CheckpointError, KdetError

# (source key, kdet key); pycls names per pycls/models/anynet.py, torchvision per
# torchvision/models/regnet.py + resnet.py, mmdet per tools/model_converters/regnet2mmdet.py.
CASES = {
    "pycls": [
        ("stem.conv.weight", "backbone.conv1.weight"),
        ("stem.bn.running_var", "backbone.bn1.running_var"),
        ("s1.b1.proj.weight", "backbone.layer1.0.downsample.0.weight"),
        ("s2.b1.bn.bias", "backbone.layer2.0.downsample.1.bias"),
        ("s3.b4.f.a.weight", "backbone.layer3.3.conv1.weight"),
        ("s3.b4.f.a_bn.running_mean", "backbone.layer3.3.bn1.running_mean"),
        ("s4.b2.f.b.weight", "backbone.layer4.1.conv2.weight"),
        ("s4.b2.f.b_bn.weight", "backbone.layer4.1.bn2.weight"),
        ("s1.b1.f.se.f_ex.0.weight", "backbone.layer1.0.se.fc1.weight"),
        ("s1.b1.f.se.f_ex.2.bias", "backbone.layer1.0.se.fc2.bias"),
        ("s2.b7.f.c.weight", "backbone.layer2.6.conv3.weight"),
        ("s2.b7.f.c_bn.bias", "backbone.layer2.6.bn3.bias"),
        ("head.fc.weight", "head.fc.weight"),
    ],
    "torchvision": [
        ("stem.0.weight", "backbone.conv1.weight"),
        ("stem.1.running_mean", "backbone.bn1.running_mean"),
        ("trunk_output.block2.block2-0.proj.0.weight", "backbone.layer2.0.downsample.0.weight"),
        ("trunk_output.block2.block2-0.proj.1.running_var", "backbone.layer2.0.downsample.1.running_var"),
        ("trunk_output.block4.block4-3.f.a.0.weight", "backbone.layer4.3.conv1.weight"),
        ("trunk_output.block4.block4-3.f.b.1.bias", "backbone.layer4.3.bn2.bias"),
        ("trunk_output.block1.block1-0.f.se.fc1.weight", "backbone.layer1.0.se.fc1.weight"),
        ("trunk_output.block1.block1-0.f.se.fc2.bias", "backbone.layer1.0.se.fc2.bias"),
        ("trunk_output.block3.block3-1.f.c.1.weight", "backbone.layer3.1.bn3.weight"),
        ("fc.weight", "head.fc.weight"),
    ],
    "torchvision-resnet": [  # torchvision's ResNet uses MMDetection's naming
        ("conv1.weight", "backbone.conv1.weight"),
        ("fc.bias", "head.fc.bias"),
        ("layer1.0.downsample.1.running_mean", "backbone.layer1.0.downsample.1.running_mean"),
        ("layer3.22.conv2.weight", "backbone.layer3.22.conv2.weight"),
    ],
    "mmcls": [
        ("backbone.layer1.0.conv1.weight", "backbone.layer1.0.conv1.weight"),
        ("head.fc.bias", "head.fc.bias"),
    ],
}


@pytest.mark.parametrize("source", list(CASES))
def test_source_keys(source):
    src = {k: np.zeros(1) for k, _ in CASES[source]}
    renamed, unmapped, ignored = keymaps.canonical_keys(src, source.split("-")[0])
    assert unmapped == [] and ignored == []
    assert {v: k for k, v in renamed.items()} == dict(CASES[source])


def test_mmdet_bare_and_detector_checkpoints():
    bare = {"conv1.weight": 0, "layer1.0.downsample.0.weight": 0, "fc.bias": 0,
            "layer2.0.conv2.conv_offset.weight": 0, "bn1.num_batches_tracked": 0}
    renamed, unmapped, ignored = keymaps.canonical_keys(bare, "mmdet")
    assert renamed == {"backbone.conv1.weight": "conv1.weight",
                       "backbone.layer1.0.downsample.0.weight": "layer1.0.downsample.0.weight",
                       "head.fc.bias": "fc.bias",
                       "backbone.layer2.0.conv2.conv_offset.weight": "layer2.0.conv2.conv_offset.weight"}
    assert ignored == ["bn1.num_batches_tracked"] and unmapped == []
    det = {"backbone.conv1.weight": 0, "neck.fpn_convs.0.conv.weight": 0,
           "roi_head.bbox_head.fc_cls.weight": 0}
    renamed, unmapped, _ = keymaps.canonical_keys(det, "mmdet")
    assert sorted(renamed) == sorted(det) and unmapped == []


def test_unknown_keys_and_sources():
    renamed, unmapped, _ = keymaps.canonical_keys(
        {"s1.b1.f.zz.weight": 0, "stem.conv.weight": 0, "s1.b0.f.a.weight": 0}, "pycls")
    assert unmapped == ["s1.b1.f.zz.weight", "s1.b0.f.a.weight"]
    assert list(renamed) == ["backbone.conv1.weight"]
    _, unmapped, _ = keymaps.canonical_keys({"trunk_output.block1.block2-0.f.a.0.weight": 0},
                                            "torchvision")
    assert unmapped == ["trunk_output.block1.block2-0.f.a.0.weight"]
    with pytest.raises(KdetError, match="unknown checkpoint source 'timm'.*pycls"):
        keymaps.canonical_keys({}, "timm")
    with pytest.raises(CheckpointError, match="both map to 'backbone.conv1.weight'"):
        keymaps.canonical_keys({"stem.0.weight": 0, "conv1.weight": 0}, "torchvision")


def test_pycls_to_mmdet_matches_regnet2mmdet_and_inverts():
    pycls = {k: np.full(2, i, np.float32) for i, (k, _) in enumerate(CASES["pycls"])}
    pycls["s1.b1.f.a_bn.num_batches_tracked"] = np.array(3)
    mm, left = pycls_to_mmdet(pycls)
    # regnet2mmdet.py: stem.conv -> conv1, s{i}.b{j} -> layer{i}.{j-1}, head.fc -> fc
    assert mm["conv1.weight"] is pycls["stem.conv.weight"]
    assert mm["layer2.6.bn3.bias"] is pycls["s2.b7.f.c_bn.bias"]
    assert mm["layer1.0.downsample.0.weight"] is pycls["s1.b1.proj.weight"]
    assert mm["fc.weight"] is pycls["head.fc.weight"]
    assert mm["layer1.0.se.fc2.bias"] is pycls["s1.b1.f.se.f_ex.2.bias"]
    assert mm["layer1.0.bn1.num_batches_tracked"] is pycls["s1.b1.f.a_bn.num_batches_tracked"]
    assert left == []
    back, left = mmdet_to_pycls(mm)
    assert left == [] and list(back) == list(pycls)
    assert pycls_to_mmdet({"s1.b1.f.zz.weight": 0, "cfg.x": 0}) == ({}, ["s1.b1.f.zz.weight", "cfg.x"])
    # a detector checkpoint: backbone.* converted, the rest reported
    back, left = mmdet_to_pycls({"backbone." + k: v for k, v in mm.items() if k != "fc.weight"}
                                | {"neck.lateral_convs.0.conv.weight": np.zeros(1)})
    assert "s1.b1.proj.weight" in back and left == ["neck.lateral_convs.0.conv.weight"]
