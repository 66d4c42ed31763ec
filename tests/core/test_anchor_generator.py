"""AnchorGenerator against MMDetection v2's numbers and a torch port of its grid code."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.core import AnchorGenerator, anchor_inside_flags
from kdet.errors import KdetError

# mmdet formula (gen_single_level_base_anchors, center_offset 0): w = s * 8 / sqrt(r),
# h = s * 8 * sqrt(r) for ratios (0.5, 1, 2). RPN / Faster / Mask R-CNN configs.
RPN_BASE = {
    4: [[-22.6274, -11.3137, 22.6274, 11.3137], [-16.0, -16.0, 16.0, 16.0],
        [-11.3137, -22.6274, 11.3137, 22.6274]],
    8: [[-45.2548, -22.6274, 45.2548, 22.6274], [-32.0, -32.0, 32.0, 32.0],
        [-22.6274, -45.2548, 22.6274, 45.2548]],
    16: [[-90.5097, -45.2548, 90.5097, 45.2548], [-64.0, -64.0, 64.0, 64.0],
         [-45.2548, -90.5097, 45.2548, 90.5097]],
    32: [[-181.0193, -90.5097, 181.0193, 90.5097], [-128.0, -128.0, 128.0, 128.0],
         [-90.5097, -181.0193, 90.5097, 181.0193]],
    64: [[-362.0387, -181.0193, 362.0387, 181.0193], [-256.0, -256.0, 256.0, 256.0],
         [-181.0193, -362.0387, 181.0193, 362.0387]],
}
# RetinaNet (octave_base_scale 4, scales_per_octave 3); strides 8 and 16 are the
# literal values of mmdet's tests/test_utils/test_anchor.py (test_retina_anchor).
RETINA_BASE = {
    8: [[-22.6274, -11.3137, 22.6274, 11.3137], [-28.5088, -14.2544, 28.5088, 14.2544],
        [-35.9188, -17.9594, 35.9188, 17.9594], [-16.0, -16.0, 16.0, 16.0],
        [-20.1587, -20.1587, 20.1587, 20.1587], [-25.3984, -25.3984, 25.3984, 25.3984],
        [-11.3137, -22.6274, 11.3137, 22.6274], [-14.2544, -28.5088, 14.2544, 28.5088],
        [-17.9594, -35.9188, 17.9594, 35.9188]],
    16: [[-45.2548, -22.6274, 45.2548, 22.6274], [-57.0175, -28.5088, 57.0175, 28.5088],
         [-71.8376, -35.9188, 71.8376, 35.9188], [-32.0, -32.0, 32.0, 32.0],
         [-40.3175, -40.3175, 40.3175, 40.3175], [-50.7968, -50.7968, 50.7968, 50.7968],
         [-22.6274, -45.2548, 22.6274, 45.2548], [-28.5088, -57.0175, 28.5088, 57.0175],
         [-35.9188, -71.8376, 35.9188, 71.8376]],
    32: [[-90.5097, -45.2548, 90.5097, 45.2548], [-114.035, -57.0175, 114.035, 57.0175],
         [-143.6751, -71.8376, 143.6751, 71.8376], [-64.0, -64.0, 64.0, 64.0],
         [-80.6349, -80.6349, 80.6349, 80.6349], [-101.5937, -101.5937, 101.5937, 101.5937],
         [-45.2548, -90.5097, 45.2548, 90.5097], [-57.0175, -114.035, 57.0175, 114.035],
         [-71.8376, -143.6751, 71.8376, 143.6751]],
    64: [[-181.0193, -90.5097, 181.0193, 90.5097], [-228.0701, -114.035, 228.0701, 114.035],
         [-287.3503, -143.6751, 287.3503, 143.6751], [-128.0, -128.0, 128.0, 128.0],
         [-161.2699, -161.2699, 161.2699, 161.2699], [-203.1873, -203.1873, 203.1873, 203.1873],
         [-90.5097, -181.0193, 90.5097, 181.0193], [-114.035, -228.0701, 114.035, 228.0701],
         [-143.6751, -287.3503, 143.6751, 287.3503]],
    128: [[-362.0387, -181.0193, 362.0387, 181.0193], [-456.1401, -228.0701, 456.1401, 228.0701],
          [-574.7006, -287.3503, 574.7006, 287.3503], [-256.0, -256.0, 256.0, 256.0],
          [-322.5398, -322.5398, 322.5398, 322.5398], [-406.3747, -406.3747, 406.3747, 406.3747],
          [-181.0193, -362.0387, 181.0193, 362.0387], [-228.0701, -456.1401, 228.0701, 456.1401],
          [-287.3503, -574.7006, 287.3503, 574.7006]],
}


def test_rpn_base_anchors_equal_mmdet():
    gen = AnchorGenerator(strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), scales=(8,))
    assert gen.num_base_anchors == [3] * 5
    for level, stride in enumerate((4, 8, 16, 32, 64)):
        np.testing.assert_allclose(gen.base_anchors[level], RPN_BASE[stride], atol=1e-4)


def test_retina_base_anchors_equal_mmdet():
    gen = AnchorGenerator(strides=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0),
                          octave_base_scale=4, scales_per_octave=3)
    assert gen.num_base_anchors == [9] * 5
    for level, stride in enumerate((8, 16, 32, 64, 128)):
        np.testing.assert_allclose(gen.base_anchors[level], RETINA_BASE[stride], atol=1e-4)


def test_mmdet_docstring_grid():
    # mmdet AnchorGenerator docstring: AnchorGenerator([16], [1.], [1.], [9]) on 2x2
    gen = AnchorGenerator([16], [1.0], [1.0], base_sizes=[9])
    np.testing.assert_allclose(gen([(2, 2)]).numpy(), [
        [-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5],
        [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]])
    gen = AnchorGenerator([16, 32], [1.0], [1.0], base_sizes=[9, 18])
    levels = gen.grid_anchors([(2, 2), (1, 1)])
    np.testing.assert_allclose(levels[1].numpy(), [[-9.0, -9.0, 9.0, 9.0]])


def _torch_grid(base_anchors, featmap_size, stride):
    """mmdet's single_level_grid_priors, in torch (test-only reference)."""
    torch = pytest.importorskip("torch")
    base = torch.from_numpy(base_anchors)
    feat_h, feat_w = featmap_size
    shift_x = torch.arange(0, feat_w) * stride
    shift_y = torch.arange(0, feat_h) * stride
    xx = shift_x.repeat(shift_y.shape[0])
    yy = shift_y.view(-1, 1).repeat(1, shift_x.shape[0]).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).type_as(base)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4).numpy()


def test_grid_order_bitwise_equal_to_mmdet_torch_code():
    gen = AnchorGenerator(strides=(8, 16, 32, 64, 128), octave_base_scale=4, scales_per_octave=3)
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]  # odd sizes: 100x136 input
    levels = gen.grid_anchors(sizes)
    for i, (size, stride) in enumerate(zip(sizes, (8, 16, 32, 64, 128))):
        want = _torch_grid(gen.base_anchors[i], size, stride)
        np.testing.assert_array_equal(levels[i].numpy(), want)
    assert gen(sizes).shape == (sum(h * w * 9 for h, w in sizes), 4)
    assert gen.num_anchors_per_level(sizes) == [h * w * 9 for h, w in sizes]


def test_valid_flags_match_mmdet_rule():
    gen = AnchorGenerator(strides=(4, 8), ratios=(0.5, 1.0, 2.0), scales=(8,))
    sizes = [(8, 10), (4, 5)]  # padded batch of 32x40
    valid_shapes = np.array([[32, 40], [20, 13], [1, 1]])
    flags = gen.valid_flags(sizes, valid_shapes).numpy()
    assert flags.shape == (3, (80 + 20) * 3)
    for b, (h, w) in enumerate(valid_shapes):
        want = []
        for (fh, fw), s in zip(sizes, (4, 8)):
            vh, vw = min(int(np.ceil(h / s)), fh), min(int(np.ceil(w / s)), fw)
            grid = np.zeros((fh, fw), bool)
            grid[:vh, :vw] = True
            want.append(np.repeat(grid.reshape(-1), 3))
        np.testing.assert_array_equal(flags[b], np.concatenate(want))


def test_dynamic_sizes_under_xla():
    gen = AnchorGenerator(strides=(4, 8), scales=(8,))

    @tf.function(jit_compile=True)
    def f(feat):
        h, w = tf.shape(feat)[1], tf.shape(feat)[2]
        return gen([(h, w), ((h + 1) // 2, (w + 1) // 2)])

    out = f(tf.zeros([1, 5, 6, 1]))
    np.testing.assert_array_equal(out.numpy(), gen([(5, 6), (3, 3)]).numpy())


def test_anchor_inside_flags():
    anchors = np.array([[-1, 0, 5, 5], [0, 0, 10, 10], [0, 0, 11, 4]], np.float32)
    valid = np.array([[True, True, True], [True, False, True]])
    shapes = np.array([[11, 11], [11, 11]])  # (h, w); x2 < w and y2 < h strictly
    out = anchor_inside_flags(anchors, valid, shapes, allowed_border=0).numpy()
    np.testing.assert_array_equal(out, [[False, True, False], [False, False, False]])
    np.testing.assert_array_equal(anchor_inside_flags(anchors, valid, shapes, -1).numpy(), valid)
    out = anchor_inside_flags(anchors, valid, shapes, allowed_border=1).numpy()
    np.testing.assert_array_equal(out, [[True, True, True], [True, False, True]])


def test_config_round_trip():
    gen = AnchorGenerator(strides=(8, 16, 32, 64, 128), octave_base_scale=4, scales_per_octave=3)
    again = AnchorGenerator.from_config(gen.get_config())
    for a, b in zip(gen.base_anchors, again.base_anchors):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments():
    with pytest.raises(KdetError, match="center_offset"):
        AnchorGenerator(center_offset=1.5)
    with pytest.raises(KdetError, match="together"):
        AnchorGenerator(octave_base_scale=4)
    with pytest.raises(KdetError, match="either scales"):
        AnchorGenerator(scales=(2, 4), octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(KdetError, match="base_sizes"):
        AnchorGenerator(strides=(4, 8), base_sizes=[4])
    with pytest.raises(KdetError, match="positive"):
        AnchorGenerator(ratios=(0.0, 1.0))
    with pytest.raises(KdetError, match="feature-map sizes"):
        AnchorGenerator(strides=(4, 8))([(2, 2)])
