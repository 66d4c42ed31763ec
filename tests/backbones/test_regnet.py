"""RegNet backbone: widths from the design-space parameters, options, errors, serialisation."""
import numpy as np
import pytest

import keras

from kdet.backbones import RegNet, build_backbone, regnet_stages
from kdet.errors import KdetError

# FPN in_channels of MMDetection's RegNet configs (configs/regnet/*.py) -- the stage widths.
MMDET_IN_CHANNELS = {
    "regnetx_400mf": [32, 64, 160, 384], "regnetx_800mf": [64, 128, 288, 672],
    "regnetx_1.6gf": [72, 168, 408, 912], "regnetx_3.2gf": [96, 192, 432, 1008],
    "regnetx_4.0gf": [80, 240, 560, 1360], "regnetx_6.4gf": [168, 392, 784, 1624],
    "regnetx_8.0gf": [80, 240, 720, 1920], "regnetx_12gf": [224, 448, 896, 2240],
}


@pytest.mark.parametrize("arch", list(MMDET_IN_CHANNELS))
def test_stage_widths_match_mmdet_configs(arch):
    assert regnet_stages(arch)["widths"] == MMDET_IN_CHANNELS[arch]


def test_regnetx_3_2gf_outputs():
    m = RegNet("regnetx_3.2gf")
    assert m.out_channels == [96, 192, 432, 1008]
    assert m.out_strides == [4, 8, 16, 32]
    assert m.stage_depths == [2, 6, 15, 2]
    outs = m(np.zeros((1, 64, 96, 3), "float32"))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 24, 96), (1, 8, 12, 192),
                                             (1, 4, 6, 432), (1, 2, 3, 1008)]


def test_odd_input_sizes_use_ceil_like_pytorch():
    m = RegNet("regnetx_400mf", out_indices=(0, 3))
    outs = m(np.zeros((1, 65, 33, 3), "float32"))
    assert [tuple(o.shape) for o in outs] == [(1, 17, 9, 32), (1, 3, 2, 384)]


def test_name_spellings_and_arch_dict():
    a = RegNet("RegNetX-4GF", out_indices=(3,))
    b = RegNet(dict(w0=96, wa=38.65, wm=2.43, group_w=40, depth=23, bot_mul=1.0), out_indices=(3,))
    assert a.out_channels == b.out_channels == [1360]
    assert a.count_params() == b.count_params()


def test_regnety_has_squeeze_excitation():
    m = RegNet("regnety_400mf")
    names = [l.name for l in m.layers]
    assert "layer1.0.se.fc1" in names and "layer4.0.se.fc2" in names
    # pycls: SE width = round(0.25 * block input width); block 1.0 input is the 32-ch stem
    assert m.get_layer("layer1.0.se.fc1").filters == 8


def test_unknown_arch_lists_valid_names():
    with pytest.raises(KdetError, match=r"unknown RegNet arch 'regnetx_5gf'.*regnetx_400mf"):
        RegNet("regnetx_5gf")
    with pytest.raises(KdetError, match="unknown backbone"):
        build_backbone("efficientnet_b0")


def test_bad_arch_dict():
    with pytest.raises(KdetError, match="missing"):
        RegNet(dict(w0=24, wa=24.48))


@pytest.mark.parametrize("bad", [np.zeros((64, 64, 3), "float32"), np.zeros((1, 64, 64, 4), "float32")])
def test_wrong_input_rank_or_channels(bad):
    m = RegNet("regnetx_400mf")
    with pytest.raises(KdetError, match="backbone expects"):
        m(bad)


def test_out_indices_validation():
    with pytest.raises(KdetError, match="out_indices"):
        RegNet("regnetx_400mf", out_indices=(4,))
    m = RegNet("regnetx_400mf", out_indices=(1, 2))
    assert m.out_channels == [64, 160] and m.out_strides == [8, 16]


def test_frozen_stages():
    m = RegNet("regnetx_400mf", frozen_stages=1)
    assert not m.get_layer("conv1").trainable and not m.get_layer("bn1").trainable
    assert not m.get_layer("layer1.0.conv2").trainable
    assert m.get_layer("layer2.0.conv2").trainable
    frozen = {id(v) for v in m.non_trainable_weights}
    assert id(m.get_layer("layer1.0.conv1").kernel) in frozen


def test_norm_eval_keeps_statistics_in_training():
    m = RegNet("regnetx_400mf", norm_eval=True, out_indices=(0,))
    bn = m.get_layer("layer1.0.bn1")
    before = bn.moving_mean.numpy()
    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype("float32") * 5 + 3
    m(x, training=True)
    np.testing.assert_array_equal(before, bn.moving_mean.numpy())
    assert bn.gamma.trainable  # MMDetection: norm_eval freezes statistics, affine still learns
    m2 = RegNet("regnetx_400mf", norm_eval=False, out_indices=(0,))
    bn2 = m2.get_layer("layer1.0.bn1")
    b2 = bn2.moving_mean.numpy()
    m2(x, training=True)
    assert not np.allclose(b2, bn2.moving_mean.numpy())


def test_requires_grad_false_freezes_affine():
    m = RegNet("regnetx_400mf", norm_cfg=dict(type="BN", requires_grad=False), out_indices=(0,))
    assert not m.get_layer("bn1").trainable


@pytest.mark.parametrize("norm", ["GN", "SyncBN"])
def test_norm_choices(norm):
    cfg = dict(type=norm, num_groups=8) if norm == "GN" else dict(type=norm)
    m = RegNet("regnetx_400mf", norm_cfg=cfg, out_indices=(0,))
    layer = m.get_layer("layer1.0.bn1")
    if norm == "GN":
        assert isinstance(layer, keras.layers.GroupNormalization) and layer.groups == 8
    else:
        assert layer.synchronized
    assert m(np.zeros((1, 32, 32, 3), "float32"))[0].shape == (1, 8, 8, 32)


def test_bad_norm_type():
    with pytest.raises(KdetError, match="norm_cfg type"):
        RegNet("regnetx_400mf", norm_cfg=dict(type="LN"))


def test_get_config_roundtrip_and_save(tmp_path):
    m = RegNet("regnetx_400mf", out_indices=(2, 3), frozen_stages=1, norm_eval=True)
    clone = RegNet.from_config(m.get_config())
    assert clone.out_channels == m.out_channels and clone.count_params() == m.count_params()
    x = np.random.RandomState(1).randn(1, 64, 64, 3).astype("float32")
    path = tmp_path / "regnet.keras"
    m.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(m(x), loaded(x)):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


def test_dcn_in_stages_c3_to_c5():
    """mask_rcnn_regnetx-3.2GF_fpn_mdconv_c3-c5: modulated DCN for the 3x3 conv of c3-c5."""
    from kdet.layers import ModulatedDeformConv2D
    m = RegNet("regnetx_400mf", dcn=dict(type="DCNv2", deform_groups=1),
               stage_with_dcn=(False, True, True, True))
    assert not isinstance(m.get_layer("layer1.0.conv2"), ModulatedDeformConv2D)
    dcn = m.get_layer("layer2.0.conv2")
    assert isinstance(dcn, ModulatedDeformConv2D)
    assert tuple(np.broadcast_to(dcn.strides, (2,))) == (2, 2)  # stride on the 3x3 (pytorch style)
    assert dcn.groups == 64 // 16
    keys = m.torch_state_map()
    assert "layer2.0.conv2.weight" in keys and "layer2.0.conv2.conv_offset.weight" in keys
    outs = m(np.zeros((1, 64, 64, 3), "float32"))
    assert [tuple(o.shape) for o in outs][1:] == [(1, 8, 8, 64), (1, 4, 4, 160), (1, 2, 2, 384)]
    with pytest.raises(KdetError, match="dcn type"):
        RegNet("regnetx_400mf", dcn=dict(type="DCNv3"), stage_with_dcn=(False, True, True, True))
