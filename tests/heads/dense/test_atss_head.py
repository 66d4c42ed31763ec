"""ATSSHead: head-level adaptive sample selection against a numpy transcription of mmdet's
ATSSAssigner on hand-built boxes, centerness targets, loss normalisation, empty-gt and
one-box cases, centerness-weighted inference scores."""
import keras
import numpy as np
import tensorflow as tf

from kdet.heads.dense import ATSSHead
from kdet.heads.dense.atss_head import centerness_target

from .common import IMG, features, gt_empty, gt_one_box, img_shape, max_score, train_head_on

SIZES = [(IMG // s, IMG // s) for s in (8, 16, 32, 64, 128)]


def _head(**kw):
    return ATSSHead(num_classes=3, in_channels=16, feat_channels=32, **kw)


def _iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-6)


def _atss_numpy(anchors, num_level, gts, topk=9):
    """mmdet v2 ATSSAssigner.assign for one image -> gt index per anchor (-1 negative)."""
    ov = _iou(anchors, gts)  # [A, G]
    ac = (anchors[:, :2] + anchors[:, 2:]) / 2
    gc = (gts[:, :2] + gts[:, 2:]) / 2
    dist = np.sqrt(((ac[:, None] - gc[None]) ** 2).sum(-1))
    cand = []
    start = 0
    for n in num_level:
        cand.append(np.argsort(dist[start:start + n], axis=0, kind="stable")[:min(topk, n)] + start)
        start += n
    cand = np.concatenate(cand, 0)  # [K, G]
    cand_ov = ov[cand, np.arange(gts.shape[0])]
    thr = cand_ov.mean(0) + cand_ov.std(0, ddof=1)
    is_pos = cand_ov >= thr
    cx, cy = ac[cand, 0], ac[cand, 1]
    inside = np.minimum.reduce([cx - gts[:, 0], cy - gts[:, 1], gts[:, 2] - cx,
                                gts[:, 3] - cy]) > 0.01
    is_pos &= inside
    ov_inf = np.full_like(ov, -1e8)
    for g in range(gts.shape[0]):
        ov_inf[cand[is_pos[:, g], g], g] = ov[cand[is_pos[:, g], g], g]
    best = ov_inf.max(1)
    return np.where(best > -1e8, ov_inf.argmax(1), -1)


def test_selection_matches_numpy_atss_on_hand_built_boxes():
    head = _head()
    gts = np.array([[20.5, 30.0, 70.0, 90.0], [60.0, 8.0, 124.0, 40.0], [3, 100, 15, 117]],
                   np.float32)
    gt = {"boxes": tf.constant(gts[None]), "labels": tf.constant([[0, 2, 1]]),
          "ignore": tf.zeros((1, 3), tf.bool)}
    anchors = head.get_anchors(SIZES, img_shape(1))
    t = head.get_targets(anchors, gt, img_shape(1))
    ref = _atss_numpy(anchors.anchors.numpy(), anchors.num_level_anchors, gts)
    np.testing.assert_array_equal(t.gt_inds.numpy()[0] - 1, ref)
    assert (ref >= 0).sum() >= 3 and set(ref[ref >= 0]) == {0, 1, 2}
    np.testing.assert_array_equal(t.labels.numpy()[0],
                                  np.where(ref >= 0, np.array([0, 2, 1])[ref], 3))
    # ATSS regresses decoded boxes: targets are the gt boxes themselves
    pos = ref >= 0
    np.testing.assert_allclose(t.bbox_targets.numpy()[0][pos], gts[ref[pos]])


def test_centerness_target_by_hand():
    anchors = tf.constant([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 30.0, 30.0]])
    gts = tf.constant([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 40.0, 80.0]])
    # centre (10, 10) in [0,0,20,20]: 1; centre (20, 20) in [0,0,40,80]: sqrt(1 * 20/60)
    np.testing.assert_allclose(centerness_target(anchors, gts), [1.0, np.sqrt(1 / 3)], rtol=1e-6)


def test_one_box_loss_normalisation():
    head = _head()
    feats, gt = features(), gt_one_box()
    out = head(feats)
    losses = head.loss(out, gt, img_shape())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    anchors = head.get_anchors(SIZES, img_shape())
    t = head.get_targets(anchors, gt, img_shape())
    pos = t.pos_mask.numpy()
    npos = pos.sum()
    assert npos > 0 and not pos[1].any()
    ctr_t = centerness_target(anchors.anchors, t.gt_boxes[0]).numpy()[pos[0]]
    ctr = tf.concat([tf.reshape(c, [2, -1]) for c in out["score_factors"]], 1).numpy()[0][pos[0]]
    bce = np.maximum(ctr, 0) - ctr * ctr_t + np.log1p(np.exp(-np.abs(ctr)))
    # centerness BCE / (npos + 1: the empty image counts max(0, 1))
    np.testing.assert_allclose(float(losses["loss_centerness"]), bce.sum() / (npos + 1), rtol=1e-4)
    assert 0 < float(losses["loss_bbox"]) < 4.0  # 2 x (1 - GIoU) weighted-mean


def test_empty_gt_pushes_every_score_to_background():
    head = _head()
    feats, gt = features(), gt_empty()
    losses = head.loss(head(feats), gt, img_shape())
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_centerness"]) == 0.0
    assert np.isfinite(float(losses["loss_cls"]))
    before = max_score(head, feats)
    totals = train_head_on(head, feats, gt, steps=5, lr=0.01)
    assert all(np.isfinite(totals)) and max_score(head, feats) < before


def test_inference_scores_are_class_times_centerness():
    head = _head(test_cfg={"score_thr": 0.0, "iou_threshold": 1.0, "max_per_img": 5})
    out = head(features())
    cands = head.get_candidates(out, img_shape())
    cls = tf.sigmoid(tf.concat([tf.reshape(c, [2, -1, 3]) for c in out["cls_scores"]], 1))
    ctr = tf.sigmoid(tf.concat([tf.reshape(c, [2, -1]) for c in out["score_factors"]], 1))
    i = cands["anchor_idx"].numpy()[0, 0]
    lab = cands["labels"].numpy()[0, 0]
    np.testing.assert_allclose(cands["scores"][0, 0], cls[0, i, lab] * ctr[0, i], rtol=1e-5)
    dets = head.predict(out, img_shape())
    assert dets["boxes"].shape == (2, 5, 4)


def test_config_round_trip():
    head = _head()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert clone.get_config() == head.get_config()
    assert clone.loss_bbox.loss_weight == 2.0 and clone.test_cfg["iou_threshold"] == 0.6
