"""SingleRoIExtractor: mmdet's finest_scale=56 level rule and per-level RoIAlign."""
import numpy as np
import tensorflow as tf

from kdet.heads.roi import SingleRoIExtractor, map_roi_levels
from kdet.ops import roi_align


def test_level_mapping_finest_scale_56():
    # sqrt(area): 50 -> P2, 111 -> P2, 112 -> P3, 223 -> P3, 224 -> P4, 448 -> P5, 2000 -> P5.
    sides = [0, 50, 111, 112, 223, 224, 447, 448, 2000]
    boxes = tf.constant([[10, 10, 10 + s, 10 + s] for s in sides], tf.float32)
    got = map_roi_levels(boxes, 4).numpy().tolist()
    # mmdet: floor(log2(scale / 56 + 1e-6)).clamp(0, 3)
    ref = [int(np.clip(np.floor(np.log2(s / 56 + 1e-6)), 0, 3)) for s in sides]
    assert got == ref == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    # Non-square: 56 x 224 has scale 112 -> level 1.
    assert map_roi_levels(tf.constant([[0, 0, 56, 224.0]]), 4).numpy().tolist() == [1]


def test_each_roi_pooled_from_its_level():
    feats = [tf.random.normal([2, 128 // s, 128 // s, 3], seed=s) for s in (4, 8, 16, 32)]
    rois = tf.constant([[0, 4, 4, 40, 40], [1, 0, 0, 120, 120], [1, 10, 20, 74, 84],
                        [0, 0, 0, 127, 127]], tf.float32)
    out = SingleRoIExtractor(7, (4, 8, 16, 32))(feats, rois).numpy()
    levels = map_roi_levels(rois[:, 1:], 4).numpy()
    assert levels.tolist() == [0, 1, 0, 1]
    for k, lvl in enumerate(levels):
        ref = roi_align(feats[lvl], rois[k:k + 1], 7, spatial_scale=1 / (4 * 2 ** lvl),
                        sampling_ratio=0, aligned=True).numpy()[0]
        np.testing.assert_allclose(out[k], ref, rtol=1e-5, atol=1e-6)


def test_gradient_only_reaches_the_roi_level():
    feats = [tf.Variable(tf.random.normal([1, 32 // s, 32 // s, 2])) for s in (4, 8, 16, 32)]
    rois = tf.constant([[0, 2, 2, 20, 20]], tf.float32)  # level 0
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(SingleRoIExtractor(7, (4, 8, 16, 32))(feats, rois))
    grads = tape.gradient(y, feats)
    assert float(tf.reduce_sum(tf.abs(grads[0]))) > 0
    for g in grads[1:]:
        assert g is None or float(tf.reduce_sum(tf.abs(g))) == 0.0
