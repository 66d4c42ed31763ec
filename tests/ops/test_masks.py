"""paste_masks: numpy and TF twins against a torch grid_sample reference of mmdet's paste."""
import numpy as np
import pytest

from kdet.errors import KdetError
from kdet.ops.masks import paste_masks, paste_masks_numpy, resize_masks_numpy


def _torch_reference(masks, boxes, h, w):
    """mmdet v2 ``_do_paste_mask(masks, boxes, h, w, skip_empty=False)``, re-derived:
    normalised grid of pixel centres relative to each box, grid_sample(align_corners=False)."""
    torch = pytest.importorskip("torch", reason="torch (test-only reference) not installed")
    F = torch.nn.functional
    m = torch.from_numpy(masks)[:, None]
    b = torch.from_numpy(boxes)
    x0, y0, x1, y1 = b[:, 0:1], b[:, 1:2], b[:, 2:3], b[:, 3:4]
    img_y = torch.arange(0, h, dtype=torch.float32) + 0.5
    img_x = torch.arange(0, w, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    n = masks.shape[0]
    gx = img_x[:, None, :].expand(n, h, w)
    gy = img_y[:, :, None].expand(n, h, w)
    grid = torch.stack([gx, gy], dim=3)
    return F.grid_sample(m, grid, align_corners=False)[:, 0].numpy()


def _case(seed=0, m=6, size=28, h=37, w=53):
    rng = np.random.default_rng(seed)
    masks = rng.random((m, size, size)).astype(np.float32)
    x1 = rng.uniform(-8, w - 5, m)
    y1 = rng.uniform(-8, h - 5, m)
    boxes = np.stack([x1, y1, x1 + rng.uniform(2, 40, m), y1 + rng.uniform(2, 30, m)], 1)
    boxes[0] = [3.3, 4.7, 9.1, 6.2]          # box smaller than the 28x28 grid
    boxes[1] = [-20.0, -15.0, w + 12.0, h + 9.0]   # box larger than the image
    return masks, boxes.astype(np.float32), h, w


@pytest.mark.torch
def test_soft_paste_matches_torch_grid_sample():
    masks, boxes, h, w = _case()
    ref = _torch_reference(masks, boxes, h, w)
    np.testing.assert_allclose(paste_masks_numpy(masks, boxes, (h, w), threshold=None), ref,
                               atol=2e-5)
    np.testing.assert_allclose(paste_masks(masks, boxes, (h, w), threshold=None).numpy(), ref,
                               atol=2e-5)


@pytest.mark.torch
def test_binary_paste_matches_torch_and_numpy_matches_tf():
    masks, boxes, h, w = _case(seed=1, m=8, size=14)
    ref = _torch_reference(masks, boxes, h, w)
    got_np = paste_masks_numpy(masks, boxes, (h, w))
    got_tf = paste_masks(masks, boxes, (h, w)).numpy()
    assert got_np.dtype == np.uint8 and got_tf.dtype == np.uint8
    decided = np.abs(ref - 0.5) > 1e-4   # pixels float round-off cannot flip
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(got_np[decided], (ref >= 0.5)[decided])
    np.testing.assert_array_equal(got_tf[decided], (ref >= 0.5)[decided])
    assert got_np.sum() > 100


def test_full_mask_fills_box_and_only_box():
    # A mask of ones over box (10, 20, 30, 25): pixels whose centre is inside are on,
    # everything else off (the half-weight edge of zero padding sits exactly on the box).
    masks = np.ones((1, 28, 28), np.float32)
    boxes = np.array([[10.0, 20.0, 30.0, 25.0]], np.float32)
    got = paste_masks_numpy(masks, boxes, (40, 50))[0]
    expect = np.zeros((40, 50), np.uint8)
    expect[20:25, 10:30] = 1
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(paste_masks(masks, boxes, (40, 50)).numpy()[0], expect)


def test_degenerate_boxes_paste_empty_masks():
    masks = np.ones((2, 28, 28), np.float32)
    boxes = np.array([[5, 5, 5, 9], [5, 9, 8, 2]], np.float32)
    assert paste_masks_numpy(masks, boxes, (16, 16)).sum() == 0
    assert int(paste_masks(masks, boxes, (16, 16)).numpy().sum()) == 0


def test_tf_paste_under_xla():
    import tensorflow as tf
    masks, boxes, h, w = _case(seed=2, m=3)
    fn = tf.function(lambda m, b: paste_masks(m, b, (h, w), threshold=None), jit_compile=True)
    np.testing.assert_allclose(fn(masks, boxes).numpy(),
                               paste_masks_numpy(masks, boxes, (h, w), threshold=None), atol=2e-5)


@pytest.mark.torch
def test_resize_matches_torch_interpolate():
    torch = pytest.importorskip("torch", reason="torch (test-only reference) not installed")
    rng = np.random.default_rng(3)
    masks = rng.random((2, 12, 17)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None], size=(29, 8),
                                          mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(resize_masks_numpy(masks, (29, 8), threshold=None), ref, atol=1e-5)


def test_bad_input_raises_kdet_error():
    with pytest.raises(KdetError, match="masks must be"):
        paste_masks_numpy(np.zeros((28, 28)), np.zeros((1, 4)), (10, 10))
    with pytest.raises(KdetError, match="boxes must be"):
        paste_masks_numpy(np.zeros((2, 28, 28)), np.zeros((1, 4)), (10, 10))
    with pytest.raises(KdetError, match="image_size"):
        paste_masks_numpy(np.zeros((1, 28, 28)), np.zeros((1, 4)), (0, 10))
    with pytest.raises(KdetError):
        paste_masks(np.zeros((1, 28, 28)), np.zeros((1, 3)), (10, 10))
