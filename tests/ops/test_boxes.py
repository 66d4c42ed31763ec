"""kdet.ops.boxes against a loop-based numpy port of mmdet's ``bbox_overlaps``."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops import boxes as B


def ref_overlap(a, b, mode, eps=1e-6):
    """mmdet bbox_overlaps for one pair, written out scalar by scalar (float64)."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area_a if mode == "iof" else area_a + area_b - inter
    union = max(union, eps)
    iou = inter / union
    if mode != "giou":
        return iou
    ew = max(max(a[2], b[2]) - min(a[0], b[0]), 0.0)
    eh = max(max(a[3], b[3]) - min(a[1], b[1]), 0.0)
    enclose = max(ew * eh, eps)
    return iou - (enclose - union) / enclose


def random_boxes(rng, shape, size=100.0):
    xy = rng.uniform(0, size, shape + (2,))
    wh = rng.uniform(0, size / 2, shape + (2,))
    wh[..., 0][rng.uniform(size=shape) < 0.1] = 0.0  # some degenerate boxes
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.mark.parametrize("mode", ["iou", "iof", "giou"])
def test_pairwise_matches_reference(mode):
    rng = np.random.default_rng(0)
    b1, b2 = random_boxes(rng, (2, 7)), random_boxes(rng, (2, 5))
    b2[0, 0] = b1[0, 0]  # identical pair
    got = B.pairwise_overlaps(b1, b2, mode).numpy()
    assert got.shape == (2, 7, 5)
    want = np.array([[[ref_overlap(b1[k, i].astype(np.float64), b2[k, j].astype(np.float64), mode)
                       for j in range(5)] for i in range(7)] for k in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["iou", "giou", "iof"])
def test_aligned_matches_pairwise_diagonal(mode):
    rng = np.random.default_rng(1)
    b1, b2 = random_boxes(rng, (6,)), random_boxes(rng, (6,))
    aligned = B.aligned_overlaps(b1, b2, mode).numpy()
    full = B.pairwise_overlaps(b1, b2, mode).numpy()
    np.testing.assert_allclose(aligned, np.diag(full), rtol=1e-6)


def test_named_helpers_and_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(B.pairwise_iou(a, b).numpy(), [[50 / 150, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(B.pairwise_iof(a, b).numpy(), [[0.5, 0.0]], rtol=1e-6)
    # disjoint: giou = 0 - (900 - 200) / 900
    np.testing.assert_allclose(B.pairwise_giou(a, b).numpy()[0, 1], -700 / 900, rtol=1e-6)
    np.testing.assert_allclose(B.aligned_iou(a[0], b[0]).numpy(), 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(B.aligned_giou(a[0], b[0]).numpy(), 1 / 3, rtol=1e-6)
    # zero-area boxes: no NaN, eps-guarded union
    z = np.zeros((1, 4), np.float32)
    assert np.isfinite(B.pairwise_giou(z, z).numpy()).all()
    assert B.pairwise_iou(z, z).numpy()[0, 0] == 0.0


def test_area_clip_flip():
    boxes = np.array([[[-5, 2, 30, 50], [1, 1, 3, 4]]], np.float32)  # [1, 2, 4]
    np.testing.assert_allclose(B.box_area(boxes).numpy(), [[35 * 48, 6]])
    clipped = B.clip_boxes(boxes, [[40, 20]]).numpy()  # h=40, w=20
    np.testing.assert_allclose(clipped, [[[0, 2, 20, 40], [1, 1, 3, 4]]])
    np.testing.assert_allclose(B.clip_boxes(boxes[0], [40, 20]).numpy(), clipped[0])
    flipped = B.flip_boxes(boxes[:, 1:], [[40, 20]]).numpy()
    np.testing.assert_allclose(flipped, [[[17, 1, 19, 4]]])
    np.testing.assert_allclose(B.flip_boxes(boxes[0, 1:], [40, 20], "vertical").numpy(),
                               [[1, 36, 3, 39]])
    np.testing.assert_allclose(B.flip_boxes(boxes[0, 1:], [40, 20], "diagonal").numpy(),
                               [[17, 36, 19, 39]])
    # two images with different shapes
    two = np.array([[[0, 0, 50, 50]], [[0, 0, 50, 50]]], np.float32)
    np.testing.assert_allclose(B.clip_boxes(two, [[10, 20], [30, 40]]).numpy(),
                               [[[0, 0, 20, 10]], [[0, 0, 40, 30]]])


def test_convert_format_round_trip_and_values():
    box = np.array([[[10, 20, 50, 80]]], np.float32)
    shape = [[100, 200]]  # h, w
    want = {
        "xyxy": [10, 20, 50, 80], "yxyx": [20, 10, 80, 50], "xywh": [10, 20, 40, 60],
        "center_xywh": [30, 50, 40, 60], "rel_xyxy": [0.05, 0.2, 0.25, 0.8],
    }
    for fmt, values in want.items():
        out = B.convert_format(box, "xyxy", fmt, image_shape=shape).numpy()
        np.testing.assert_allclose(out[0, 0], values, rtol=1e-6)
        back = B.convert_format(out, fmt, "xyxy", image_shape=shape).numpy()
        np.testing.assert_allclose(back, box, rtol=1e-5)
    # center_xywh -> xywh directly
    np.testing.assert_allclose(
        B.convert_format(np.array([30, 50, 40, 60.0]), "center_xywh", "xywh").numpy(),
        [10, 20, 40, 60])


def test_xla_compiles():
    f = tf.function(lambda a, b: (B.pairwise_overlaps(a, b, "giou"),
                                  B.clip_boxes(a, tf.constant([[64.0, 64.0]]))),
                    jit_compile=True)
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, (1, 4)), random_boxes(rng, (1, 3))
    g, c = f(a, b)
    np.testing.assert_allclose(g.numpy(), B.pairwise_overlaps(a, b, "giou").numpy(), rtol=1e-5)
    assert c.shape == (1, 4, 4)


def test_bad_input():
    with pytest.raises(KdetError, match="mode"):
        B.pairwise_overlaps(np.zeros((1, 4)), np.zeros((1, 4)), "dice")
    with pytest.raises(KdetError, match=r"\[..., 4\]"):
        B.pairwise_iou(np.zeros((1, 5)), np.zeros((1, 4)))
    with pytest.raises(KdetError, match="unknown source box format"):
        B.convert_format(np.zeros((1, 4)), "xyz", "xyxy")
    with pytest.raises(KdetError, match="image_shape"):
        B.convert_format(np.zeros((1, 4)), "xyxy", "rel_xyxy")
    with pytest.raises(KdetError, match="direction"):
        B.flip_boxes(np.zeros((1, 4)), [10, 10], "sideways")
