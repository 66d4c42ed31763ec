"""MMDetection transform semantics: rescale rule, scale sampling, flip, normalise, resize."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.data import transforms as T
from kdet.errors import KdetError


# (h, w) -> (new_h, new_w) for img_scale (1333, 800), worked by hand with mmcv's rule
# s = min(1333 / max(h, w), 800 / min(h, w)); new = int(x * s + 0.5).
@pytest.mark.parametrize("hw, expected", [
    ((480, 640), (800, 1067)),    # s = 800/480 = 1.6667: w = 1066.67 -> 1067
    ((427, 640), (800, 1199)),    # s = 800/427 = 1.87354: w = 1199.06 -> 1199
    ((640, 427), (1199, 800)),    # portrait: same factor, edges swapped
    ((100, 1000), (133, 1333)),   # long edge binds: s = 1.333, h = 133.3 -> 133
    ((800, 1333), (800, 1333)),   # already at scale: s = 1
    ((1600, 2666), (800, 1333)),  # downscale: s = 0.5
    ((3, 4), (800, 1067)),        # tiny image upscaled
])
def test_rescale_size_matches_mmcv_rule(hw, expected):
    new_h, new_w, (sy, sx) = T.rescale_size(*hw, (1333, 800))
    assert (new_h, new_w) == expected
    assert (sy, sx) == (expected[0] / hw[0], expected[1] / hw[1])
    tf_hw = T.rescale_size_tf(hw[0], hw[1], 1333, 800)
    assert tuple(int(v) for v in tf_hw) == expected


def test_rescale_size_tf_agrees_on_random_sizes_and_fits_pad():
    rng = np.random.default_rng(0)
    for h, w, a, b in rng.integers([16, 16, 300, 200], [2000, 2000, 1400, 900], (200, 4)):
        long_, short = max(a, b), min(a, b)
        got = tuple(int(v) for v in T.rescale_size_tf(h, w, long_, short))
        assert got == T.rescale_size(int(h), int(w), (int(long_), int(short)))[:2]
        fit = tuple(int(v) for v in T.rescale_size_tf(h, w, long_, short, fit_within=(512, 384)))
        assert fit[0] <= 512 and fit[1] <= 384
    assert tuple(int(v) for v in T.rescale_size_tf(480, 640, 1333, 800,
                                                   fit_within=(640, 640))) == (480, 640)


def test_sample_scale_range_and_value():
    scales = [(1333, 640), (1333, 800)]
    seeds = [tf.constant([i, 0], tf.int64) for i in range(300)]
    rng = [tuple(int(v) for v in T.sample_scale(s, scales, "range")) for s in seeds]
    assert {l_ for l_, _ in rng} == {1333}
    shorts = np.array([s for _, s in rng])
    assert shorts.min() >= 640 and shorts.max() <= 800 and len(set(shorts)) > 100
    assert shorts.min() < 660 and shorts.max() > 780   # the range is covered, ends included
    val = [tuple(int(v) for v in T.sample_scale(s, scales, "value")) for s in seeds]
    assert set(val) == {(1333, 640), (1333, 800)}
    assert 100 < sum(v == (1333, 640) for v in val) < 200
    assert tuple(int(v) for v in T.sample_scale(seeds[0], [(1333, 800)], None)) == (1333, 800)
    again = [tuple(int(v) for v in T.sample_scale(s, scales, "range")) for s in seeds]
    assert again == rng   # stateless: same seed, same scale


def test_flip_boxes_mmdet_v2():
    boxes = tf.constant([[10., 20., 30., 50.], [0., 0., 100., 5.]])
    np.testing.assert_array_equal(T.flip_boxes_horizontal(boxes, 100),
                                  [[70., 20., 90., 50.], [0., 0., 100., 5.]])


def test_normalize_styles():
    pixel = tf.constant([[[255., 0., 128.]]])
    pt = T.normalize_image(pixel, "pytorch").numpy()[0, 0]
    np.testing.assert_allclose(pt, [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12,
                                    (128 - 103.53) / 57.375], rtol=1e-6)
    caffe = T.normalize_image(pixel, "caffe").numpy()[0, 0]
    np.testing.assert_allclose(caffe, [128 - 103.53, 0 - 116.28, 255 - 123.675], rtol=1e-6)
    with pytest.raises(KdetError, match="unknown normalisation style 'tf'"):
        T.normalization("tf")


def test_resize_masks_is_cv2_nearest():
    rng = np.random.default_rng(1)
    masks = (rng.uniform(size=(3, 7, 9)) < 0.5).astype(np.uint8)
    out = T.resize_masks(tf.constant(masks), 17, 13).numpy()
    # cv2 INTER_NEAREST (resizeNN): sx = min(floor(dx * ifx), w - 1), ifx = 1 / (dw / w)
    rows = np.minimum(np.floor(np.arange(17) * (1 / (17 / 7))), 6).astype(int)
    cols = np.minimum(np.floor(np.arange(13) * (1 / (13 / 9))), 8).astype(int)
    np.testing.assert_array_equal(out, masks[:, rows][:, :, cols])
    assert T.resize_masks(tf.zeros([0, 7, 9], tf.uint8), 4, 5).shape == (0, 4, 5)
    # TF's own nearest kernel (same floor rule, float32 scale) agrees on these sizes
    tf_nn = tf.raw_ops.ResizeNearestNeighbor(images=masks[..., None], size=[17, 13])[..., 0]
    np.testing.assert_array_equal(out, tf_nn)


@pytest.mark.torch
@pytest.mark.parametrize("size", [(23, 31), (9, 14)])
def test_resize_image_matches_half_pixel_bilinear(size):
    """cv2.INTER_LINEAR == torch bilinear(align_corners=False, antialias=False)."""
    torch = pytest.importorskip("torch", reason="PyTorch CPU is the bilinear reference")
    img = np.random.default_rng(2).integers(0, 256, (15, 20, 3)).astype(np.uint8)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].double(), size=size, mode="bilinear",
        align_corners=False)[0].permute(1, 2, 0).numpy()
    got = T.resize_image(tf.constant(img), *size).numpy()
    np.testing.assert_allclose(got, np.clip(np.round(ref), 0, 255), atol=1.0)
    assert np.mean(got == np.clip(np.round(ref), 0, 255)) > 0.97


def test_resize_boxes_scales_and_clips():
    boxes = tf.constant([[10., 10., 50., 40.], [30., 0., 70., 45.]])
    out = T.resize_boxes(boxes, tf.constant(2.0), tf.constant(0.5), 80, 30).numpy()
    np.testing.assert_allclose(out, [[5., 20., 25., 80.], [15., 0., 30., 80.]])


def test_padded_size_and_bad_scale():
    assert tuple(int(v) for v in T.padded_size(800, 1067, 32)) == (800, 1088)
    assert tuple(int(v) for v in T.padded_size(33, 64, 32)) == (64, 64)
    for bad in [(1333,), (0, 800), "big", None]:
        with pytest.raises(KdetError, match="img_scale"):
            T.check_img_scale(bad)
