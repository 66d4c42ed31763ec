"""NMS against a numpy transcription of mmcv's nms_cpu (greedy, suppress if IoU > thr)."""
import math

import numpy as np
import pytest
import tensorflow as tf

import kdet.ops as ops
from kdet.errors import KdetError


def nms_ref(boxes, scores, thr):
    """mmcv nms_cpu with offset 0; stable descending order (lower index first on ties)."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    order = sorted((i for i in range(len(scores)) if not np.isnan(scores[i])),
                   key=lambda i: (-scores[i], i))
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = w * h
            union = areas[i] + areas[j] - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                if inter / union > thr:
                    suppressed[j] = True
    return np.array(keep, np.int64)


def batched_nms_ref(boxes, scores, classes, thr):
    boxes = np.asarray(boxes, np.float32)
    if len(boxes) == 0:
        return np.zeros([0], np.int64)
    offsets = classes.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms_ref(boxes + offsets[:, None], scores, thr)


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 3, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 60)
    # Quantised scores create many exact ties.
    scores = np.round(rng.uniform(0, 1, 60), 1).astype(np.float32)
    got = ops.nms(boxes, scores, thr).numpy()
    np.testing.assert_array_equal(got, nms_ref(boxes, scores, thr))


def test_nms_ties_keep_lower_index_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]],
                     np.float32)
    scores = np.array([0.5, 0.5, 0.9, 0.9], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5).numpy(), [2, 0])


def test_nms_threshold_is_strict():
    # IoU of these two boxes is exactly 0.5 (intersection 50, union 100): kept at thr 0.5.
    boxes = np.array([[0, 0, 10, 7.5], [0, 2.5, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5).numpy(), [0, 1])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.49).numpy(), [0])


def test_nms_empty_and_nan_scores():
    assert ops.nms(np.zeros([0, 4], np.float32), np.zeros([0], np.float32), 0.5).shape == [0]
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    np.testing.assert_array_equal(
        ops.nms(boxes, np.array([math.nan, 0.1], np.float32), 0.5).numpy(), [1])


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_reference(seed):
    rng = np.random.default_rng(10 + seed)
    boxes = random_boxes(rng, 80)
    scores = np.round(rng.uniform(0, 1, 80), 2).astype(np.float32)
    classes = rng.integers(0, 4, 80)
    got = ops.batched_nms(boxes, scores, classes, 0.5).numpy()
    np.testing.assert_array_equal(got, batched_nms_ref(boxes, scores, classes, 0.5))
    # Same-class boxes only suppress each other: class-wise NMS gives the same set.
    per_class = np.concatenate([np.flatnonzero(classes == c)[nms_ref(boxes[classes == c],
                                                                     scores[classes == c], 0.5)]
                                for c in range(4)])
    assert set(got.tolist()) == set(per_class.tolist())


def test_nms_padded_under_xla_matches_nms():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 50)
    scores = np.round(rng.uniform(0, 1, 50), 1).astype(np.float32)
    fn = tf.function(lambda b, s: ops.nms_padded(b, s, 20, 0.5, score_threshold=0.25),
                     jit_compile=True)
    idx, num = fn(tf.constant(boxes), tf.constant(scores))
    assert idx.shape == [20]
    cand = np.flatnonzero(scores > 0.25)
    ref = cand[nms_ref(boxes[cand], scores[cand], 0.5)][:20]
    assert int(num) == len(ref)
    np.testing.assert_array_equal(idx.numpy()[:len(ref)], ref)
    assert (idx.numpy()[len(ref):] == -1).all()


def test_batched_nms_padded_per_image_under_xla():
    rng = np.random.default_rng(4)
    b, n = 3, 40
    boxes = np.stack([random_boxes(rng, n) for _ in range(b)])
    scores = np.round(rng.uniform(0, 1, (b, n)), 1).astype(np.float32)
    labels = rng.integers(-1, 3, (b, n))  # -1 = padding, never kept
    labels[2] = -1  # an image with no candidates
    fn = tf.function(lambda *a: ops.batched_nms_padded(*a, 15, 0.6, score_threshold=0.05),
                     jit_compile=True)
    idx, num = fn(tf.constant(boxes), tf.constant(scores), tf.constant(labels, tf.int32))
    assert idx.shape == [b, 15] and num.shape == [b]
    for i in range(b):
        cand = np.flatnonzero((scores[i] > 0.05) & (labels[i] >= 0))
        ref = cand[batched_nms_ref(boxes[i][cand], scores[i][cand], labels[i][cand], 0.6)][:15]
        assert int(num[i]) == len(ref)
        np.testing.assert_array_equal(idx[i].numpy()[:len(ref)], ref)
        assert (idx[i].numpy()[len(ref):] == -1).all()


def test_nms_bad_input():
    boxes = np.zeros([3, 4], np.float32)
    with pytest.raises(KdetError, match="boxes must have shape"):
        ops.nms(np.zeros([3, 5], np.float32), np.zeros([3], np.float32), 0.5)
    with pytest.raises(KdetError, match="disagree"):
        ops.nms(boxes, np.zeros([4], np.float32), 0.5)
    with pytest.raises(KdetError, match="iou_threshold"):
        ops.nms(boxes, np.zeros([3], np.float32), float("nan"))
    with pytest.raises(KdetError, match="class_ids must be an integer"):
        ops.batched_nms(boxes, np.zeros([3], np.float32), np.zeros([3], np.float32), 0.5)
    with pytest.raises(KdetError, match="max_output_size"):
        ops.nms_padded(boxes, np.zeros([3], np.float32), tf.constant(3), 0.5)
    with pytest.raises(KdetError, match="floating"):
        ops.nms(tf.zeros([3, 4], tf.int32), np.zeros([3], np.float32), 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_kernel_and_loop_agree(seed):
    """Outside XLA TensorFlow's NMS kernel runs, inside the pure-TF loop: same indices,
    including ties (rounded scores), zero-area boxes, non-candidates and padding."""
    from kdet.ops.nms import _greedy
    rng = np.random.default_rng(seed)
    b, n = 3, 200
    boxes = np.stack([random_boxes(rng, n) for _ in range(b)])
    boxes[:, :5, 2:] = boxes[:, :5, :2]                      # zero-area boxes
    scores = np.round(rng.uniform(0, 1, (b, n)), 1).astype(np.float32)
    alive = rng.uniform(size=(b, n)) > 0.2
    alive[2] = False                                          # an image with no candidate
    args = (tf.constant(boxes), tf.constant(scores), tf.constant(alive), 60, 0.5)
    k_idx, k_num = _greedy(*args, implementation="kernel")
    l_idx, l_num = _greedy(*args, implementation="loop")
    np.testing.assert_array_equal(k_num.numpy(), l_num.numpy())
    np.testing.assert_array_equal(k_idx.numpy(), l_idx.numpy())
    for i in range(b):
        cand = np.flatnonzero(alive[i])
        ref = cand[nms_ref(boxes[i][cand], scores[i][cand], 0.5)][:60]
        np.testing.assert_array_equal(k_idx[i].numpy()[:len(ref)], ref)
