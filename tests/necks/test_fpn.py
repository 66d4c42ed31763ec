"""FPN: output shapes/strides for the seeds' configs, and numerical equality with a
small torch re-implementation of mmdet's FPN.forward using the same weights."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.necks import FPN


def inputs_for(image_hw, channels, strides, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    h, w = image_hw
    return [rng.standard_normal((batch, -(-h // s), -(-w // s), c)).astype(np.float32)
            for c, s in zip(channels, strides)]


def test_mask_rcnn_regnetx_3_2gf_shapes():
    # configs/regnet/mask_rcnn_regnetx-3.2GF_fpn_1x_coco.py: in_channels [96, 192, 432, 1008]
    fpn = FPN([96, 192, 432, 1008], 256, num_outs=5)
    xs = inputs_for((200, 328), [96, 192, 432, 1008], [4, 8, 16, 32])
    outs = fpn(xs)
    assert [tuple(o.shape) for o in outs] == [
        (1, 50, 82, 256), (1, 25, 41, 256), (1, 13, 21, 256), (1, 7, 11, 256), (1, 4, 6, 256)]
    assert fpn.output_strides([4, 8, 16, 32]) == [4, 8, 16, 32, 64]
    assert len(fpn.weights) == 16  # 4 lateral + 4 output convs, no extra convs
    # P6 is the stride-2 subsampling of P5 (max_pool2d kernel 1)
    np.testing.assert_array_equal(outs[4].numpy(), outs[3].numpy()[:, ::2, ::2])


def test_retinanet_shapes():
    # retinanet_r50_fpn: start_level 1, add_extra_convs 'on_input', num_outs 5 (P3-P7)
    fpn = FPN([96, 192, 432, 1008], 256, num_outs=5, start_level=1, add_extra_convs="on_input")
    xs = inputs_for((256, 320), [96, 192, 432, 1008], [4, 8, 16, 32])
    outs = fpn(xs)
    assert [tuple(o.shape[1:3]) for o in outs] == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]
    assert fpn.output_strides([4, 8, 16, 32]) == [8, 16, 32, 64, 128]
    names = sorted({w.path.split("/")[1] for w in fpn.weights})
    assert names == sorted([f"lateral_convs.{i}.conv" for i in range(3)]
                           + [f"fpn_convs.{i}.conv" for i in range(5)])
    assert fpn.fpn_convs[3].kernel.shape == (3, 3, 1008, 256)  # P6 from C5
    assert fpn.compute_output_shape([x.shape for x in xs]) == [tuple(o.shape) for o in outs]


def torch_fpn_forward(fpn, xs):
    """mmdet FPN.forward in torch with the Keras layer's weights (NCHW)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def conv(layer, x, stride=1):
        w = torch.from_numpy(np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)))
        b = torch.from_numpy(layer.bias.numpy())
        return F.conv2d(x, w, b, stride=stride, padding=w.shape[-1] // 2)

    inputs = [torch.from_numpy(np.transpose(x, (0, 3, 1, 2))) for x in xs]
    used = len(fpn.lateral_convs)
    end = fpn.start_level + used
    laterals = [conv(layer, inputs[i + fpn.start_level]) for i, layer in
                enumerate(fpn.lateral_convs)]
    for i in range(used - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(
            laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
    outs = [conv(fpn.fpn_convs[i], laterals[i]) for i in range(used)]
    if fpn.num_outs > used:
        if not fpn.add_extra_convs:
            for _ in range(fpn.num_outs - used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        else:
            src = {"on_input": inputs[end - 1], "on_lateral": laterals[-1],
                   "on_output": outs[-1]}[fpn.add_extra_convs]
            outs.append(conv(fpn.fpn_convs[used], src, stride=2))
            for i in range(used + 1, fpn.num_outs):
                x = F.relu(outs[-1]) if fpn.relu_before_extra_convs else outs[-1]
                outs.append(conv(fpn.fpn_convs[i], x, stride=2))
    return [np.transpose(o.numpy(), (0, 2, 3, 1)) for o in outs]


@pytest.mark.parametrize("kwargs", [
    dict(num_outs=5),
    dict(num_outs=5, start_level=1, add_extra_convs="on_input"),
    dict(num_outs=6, start_level=1, add_extra_convs="on_output", relu_before_extra_convs=True),
    dict(num_outs=4, add_extra_convs="on_lateral"),
    dict(num_outs=2, start_level=1, end_level=2),
])
def test_equals_torch_reference(kwargs):
    channels = [8, 12, 16, 20]
    fpn = FPN(channels, out_channels=8, **kwargs)
    # odd sizes: 2x upsampling does not land on the lateral's size, nearest-to-size does
    xs = inputs_for((75, 101), channels, [4, 8, 16, 32], batch=2, seed=1)
    got = fpn(xs)
    # random (non-zero) biases so their mapping is checked too
    for layer in fpn.lateral_convs + fpn.fpn_convs:
        layer.bias.assign(np.random.default_rng(2).standard_normal(layer.bias.shape))
    got = fpn(xs)
    want = torch_fpn_forward(fpn, xs)
    assert len(got) == len(want) == fpn.num_outs
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)


def test_init_config_roundtrip_xla_and_key_map(tmp_path):
    fpn = FPN([8, 16], out_channels=4, num_outs=3, add_extra_convs=True, name="neck")
    xs = inputs_for((32, 32), [8, 16], [4, 8])
    outs = fpn(xs)
    # mmdet init: xavier-uniform kernels (limit sqrt(6 / (fan_in + fan_out))), zero biases
    k = fpn.fpn_convs[0].kernel.numpy()
    assert np.abs(k).max() <= np.sqrt(6 / (9 * 4 + 9 * 4)) and np.abs(k).max() > 0
    assert not fpn.fpn_convs[2].bias.numpy().any()
    assert fpn.add_extra_convs == "on_input"  # True means 'on_input' in mmdet
    clone = FPN.from_config(fpn.get_config())
    clone(xs)
    clone.set_weights(fpn.get_weights())
    for a, b in zip(clone(xs), outs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    # keras.saving round trip inside a functional model
    ins = [keras.Input((8, 8, 8)), keras.Input((4, 4, 16))]
    model = keras.Model(ins, fpn(ins))
    path = tmp_path / "fpn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded(xs), outs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    f = tf.function(fpn.call, jit_compile=True)
    for a, b in zip(f([tf.constant(x) for x in xs]), outs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    keys = fpn.mmdet_key_map()
    assert keys["neck.lateral_convs.1.conv.weight"] == "lateral_convs.1.conv/kernel"
    assert keys["neck.fpn_convs.2.conv.bias"] == "fpn_convs.2.conv/bias"
    assert len(keys) == 2 * (2 + 3)


def test_bad_arguments():
    with pytest.raises(KdetError, match="add_extra_convs"):
        FPN([8, 16], 4, 3, add_extra_convs="on_top")
    with pytest.raises(KdetError, match="num_outs"):
        FPN([8, 16, 32], 4, num_outs=2)
    with pytest.raises(KdetError, match="end_level"):
        FPN([8, 16, 32], 4, num_outs=3, start_level=1, end_level=1)
    with pytest.raises(KdetError, match="upsample"):
        FPN([8, 16], 4, 2, upsample="bilinear")
    fpn = FPN([8, 16], 4, 2)
    with pytest.raises(KdetError, match="inputs"):
        fpn(inputs_for((32, 32), [8], [4]))
    with pytest.raises(KdetError, match="channels"):
        fpn(inputs_for((32, 32), [8, 15], [4, 8]))
