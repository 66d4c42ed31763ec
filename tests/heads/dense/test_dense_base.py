"""BaseDenseHead helpers and AnchorHead plumbing: flattening order, static top-k pairs,
padded multi-class NMS, MMDetection's RetinaNet anchors, bad input."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.heads.dense import AnchorHead, RetinaHead, flatten_levels, multiclass_nms, topk_pairs

from .common import features


def test_flatten_levels_order_is_location_then_anchor():
    x = tf.reshape(tf.range(2 * 2 * 3 * 2 * 5, dtype=tf.float32), [2, 2, 3, 10])  # A=2, C=5
    flat = flatten_levels([x, x[:, :1, :1]], 5)
    assert flat.shape == (2, 2 * 3 * 2 + 2, 5)
    # anchor a of location (y, x) -> row (y * W + x) * A + a, channels a*C .. a*C+C-1.
    np.testing.assert_array_equal(flat[1, (1 * 3 + 2) * 2 + 1], x[1, 1, 2, 5:10])


def test_topk_pairs_matches_numpy_filter_scores_and_topk():
    rng = np.random.default_rng(0)
    s = rng.random((2, 7, 3)).astype(np.float32)
    vals, loc, lab = topk_pairs(tf.constant(s), 5, 0.5)
    for b in range(2):
        flat = s[b].reshape(-1)
        order = np.argsort(-flat, kind="stable")[:5]
        np.testing.assert_allclose(vals[b], flat[order])
        np.testing.assert_array_equal(loc[b], order // 3)
        np.testing.assert_array_equal(lab[b], np.where(flat[order] > 0.5, order % 3, -1))


def test_multiclass_nms_is_class_aware_and_padded():
    boxes = tf.constant([[[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.]]])
    scores = tf.constant([[0.9, 0.8, 0.7, 0.1]])
    labels = tf.constant([[0, 0, 1, -1]])
    dets, keep = multiclass_nms(boxes, scores, labels, 0.5, 4)
    np.testing.assert_array_equal(keep[0], [0, 2, -1, -1])
    np.testing.assert_array_equal(dets["labels"][0], [0, 1, -1, -1])
    np.testing.assert_allclose(dets["scores"][0], [0.9, 0.7, 0, 0])
    assert int(dets["num_detections"][0]) == 2
    np.testing.assert_array_equal(dets["boxes"][0, 2:], 0)


def test_retinanet_base_anchors_equal_mmdetection():
    # mmdet tests/test_utils/test_anchor.py::test_retina_anchor, stride 8 level.
    expected = np.array([[-22.6274, -11.3137, 22.6274, 11.3137],
                         [-28.5088, -14.2544, 28.5088, 14.2544],
                         [-35.9188, -17.9594, 35.9188, 17.9594],
                         [-16.0000, -16.0000, 16.0000, 16.0000],
                         [-20.1587, -20.1587, 20.1587, 20.1587],
                         [-25.3984, -25.3984, 25.3984, 25.3984],
                         [-11.3137, -22.6274, 11.3137, 22.6274],
                         [-14.2544, -28.5088, 14.2544, 28.5088],
                         [-17.9594, -35.9188, 17.9594, 35.9188]])
    head = RetinaHead(num_classes=2)
    gen = head.anchor_generator
    np.testing.assert_allclose(gen.base_anchors[0], expected, atol=1e-4)
    np.testing.assert_allclose(gen.base_anchors[4], expected * 16, rtol=1e-5)
    anchors = head.get_anchors([(2, 3)] + [(1, 1)] * 4, tf.constant([[16.0, 24.0]]))
    assert anchors.num_level_anchors == [54, 9, 9, 9, 9]
    # anchor (y=1, x=2, a=4) = base 4 shifted by (16, 8)
    np.testing.assert_allclose(anchors.anchors[(1 * 3 + 2) * 9 + 4],
                               expected[4] + [16, 8, 16, 8], atol=1e-4)


def test_bad_arguments_raise_kdet_errors():
    with pytest.raises(KdetError, match="num_classes"):
        AnchorHead(num_classes=0)
    with pytest.raises(KdetError, match="max_per_img"):
        AnchorHead(num_classes=2, test_cfg={"max_per_img": 0})
    with pytest.raises(KdetError, match="loss type"):
        AnchorHead(num_classes=2, loss_cls={"type": "NoSuchLoss"})
    with pytest.raises(KdetError, match="assigner type"):
        AnchorHead(num_classes=2, assigner={"type": "Nope"})
    head = AnchorHead(num_classes=2, in_channels=16)
    with pytest.raises(KdetError, match="list of NHWC"):
        head.forward(tf.zeros([1, 8, 8, 16]))
    out = head(features())
    with pytest.raises(KdetError, match="img_shape"):
        head.predict(out)
    with pytest.raises(KdetError, match=r"\[B, 2\]"):
        head.predict(out, img_shape=tf.zeros([2, 3]))
