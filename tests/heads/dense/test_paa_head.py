"""PAAHead: the in-graph reassignment against a transcription of mmdet's ``paa_reassign`` that
uses scikit-learn's GaussianMixture, the separation scheme, score voting against mmdet's
loop, losses in the empty-gt and one-box cases, score voting on / off."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.heads.dense import PAAHead
from kdet.ops import pairwise_iou

from .common import IMG, features, gt_empty, gt_one_box, img_shape, max_score, train_head_on

SIZES = [(IMG // s, IMG // s) for s in (8, 16, 32, 64, 128)]


def _head(**kw):
    return PAAHead(num_classes=3, in_channels=16, feat_channels=32, **kw)


def _mmdet_paa_reassign(pos_losses, pos_inds, pos_gt_inds, num_level, topk=9):
    """mmdet v2 PAAHead.paa_reassign (one image) with sklearn; returns the positive indices."""
    skm = pytest.importorskip("sklearn.mixture")
    bounds = np.cumsum([0] + list(num_level))
    out = []
    for g in range(pos_gt_inds.max() + 1 if len(pos_gt_inds) else 0):
        inds, losses = [], []
        for lv in range(len(num_level)):
            m = (pos_gt_inds == g) & (pos_inds >= bounds[lv]) & (pos_inds < bounds[lv + 1])
            order = np.argsort(pos_losses[m], kind="stable")[:min(m.sum(), topk)]
            inds.append(pos_inds[m][order])
            losses.append(pos_losses[m][order])
        inds, losses = np.concatenate(inds), np.concatenate(losses)
        if len(inds) < 2:
            continue
        order = np.argsort(losses, kind="stable")
        losses, inds = losses[order].reshape(-1, 1), inds[order]
        gmm = skm.GaussianMixture(2, weights_init=np.array([0.5, 0.5]),
                                  means_init=np.array([losses.min(), losses.max()]).reshape(2, 1),
                                  precisions_init=np.ones((2, 1)), covariance_type="diag")
        gmm.fit(losses)
        comp, scores = gmm.predict(losses), gmm.score_samples(losses)
        fgs = comp == 0
        if fgs.any():
            thr = np.argmax(scores[fgs])
            out.append(inds[fgs][:thr + 1])
    return np.sort(np.concatenate(out)) if out else np.zeros([0], int)


def test_reassignment_matches_mmdet_with_sklearn():
    head = _head()
    gts = np.array([[[20.0, 30.0, 70.0, 90.0], [60.0, 8.0, 124.0, 40.0], [0, 0, 0, 0]],
                    [[10.0, 10.0, 110.0, 100.0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    gt = {"boxes": tf.constant(gts), "labels": tf.constant([[0, 2, -1], [1, -1, -1]]),
          "ignore": tf.zeros((2, 3), tf.bool)}
    anchors = head.get_anchors(SIZES, img_shape())
    t = head.get_targets(anchors, gt, img_shape())
    rng = np.random.default_rng(0)
    a = anchors.anchors.shape[0]
    # loss-like candidate scores: two clusters plus noise
    losses = np.where(rng.random((2, a)) < 0.4, rng.normal(0.6, 0.15, (2, a)),
                      rng.normal(2.0, 0.5, (2, a))).astype(np.float32)
    losses = np.abs(losses)
    pos, ignore = head.paa_reassign(tf.constant(losses), t, anchors.num_level_anchors, 3)
    assert not ignore.numpy().any()
    for b in range(2):
        cand = t.pos_mask.numpy()[b]
        pos_inds = np.nonzero(cand)[0]
        ref = _mmdet_paa_reassign(losses[b][pos_inds], pos_inds,
                                  t.gt_inds.numpy()[b][pos_inds] - 1, anchors.num_level_anchors)
        got = np.nonzero(pos.numpy()[b])[0]
        assert len(ref) > 0
        np.testing.assert_array_equal(got, ref)


def test_separation_scheme_by_hand():
    head = _head()
    comp = tf.constant([[[0, 0, 1, 0, 1]]])
    scores = tf.constant([[[0.1, 0.9, 0.5, 0.3, 0.0]]])
    valid = tf.constant([[[True, True, True, True, False]]])
    pos, ignore = head.gmm_separation_scheme(comp, scores, valid)
    # fg slots 0, 1, 3; best fg likelihood at slot 1 -> slots 0 and 1 positive
    assert pos.numpy().tolist() == [[[True, True, False, False, False]]]
    assert not ignore.numpy().any()


def test_score_voting_matches_mmdet_loop():
    head = _head(test_cfg={"score_thr": 0.05})
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 60, (12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 40, (12, 2))], 1).astype(np.float32)
    nms_scores = rng.uniform(0, 0.6, (12, 3)).astype(np.float32)
    det_idx = [0, 5]
    det_lab = [nms_scores[0].argmax(), nms_scores[5].argmax()]
    dets = {"boxes": tf.constant(np.stack([boxes[0], boxes[5], np.zeros(4)])[None], tf.float32),
            "labels": tf.constant([[det_lab[0], det_lab[1], -1]], tf.int32)}
    voted = head.vote(dets, tf.constant(boxes[None]), tf.constant(nms_scores[None])).numpy()[0]
    ious = pairwise_iou(tf.constant(boxes[det_idx]), tf.constant(boxes)).numpy()
    for i, (d, c) in enumerate(zip(det_idx, det_lab)):
        cand = nms_scores[:, c] > 0.05
        m = cand & (ious[i] > 0.01)
        w = np.exp(-(1 - ious[i][m]) ** 2 / 0.025) * nms_scores[m, c]
        np.testing.assert_allclose(voted[i], (w[:, None] * boxes[m]).sum(0) / w.sum(), rtol=1e-5)
    np.testing.assert_array_equal(voted[2], 0)


def test_one_box_losses_and_empty_gt():
    head = _head()
    feats = features()
    losses = head.loss(head(feats), gt_one_box(), img_shape())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_iou"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values())
    empty = head.loss(head(feats), gt_empty(), img_shape())
    assert float(empty["loss_bbox"]) == 0.0 and float(empty["loss_iou"]) == 0.0
    before = max_score(head, feats)
    totals = train_head_on(head, feats, gt_empty(), steps=5, lr=0.01)
    assert all(np.isfinite(totals)) and max_score(head, feats) < before


def test_one_box_training_lowers_the_loss_and_is_xla_compilable():
    head = _head()
    feats, gt = features(), gt_one_box()
    totals = train_head_on(head, feats, gt, steps=6, lr=0.01)
    assert totals[-1] < totals[0]
    fn = tf.function(lambda f: head.loss(head(f, training=True), gt, img_shape()),
                     jit_compile=True)
    xla = fn(feats)
    eager = head.loss(head(feats, training=True), gt, img_shape())
    for k in eager:
        np.testing.assert_allclose(float(xla[k]), float(eager[k]), rtol=2e-3, atol=1e-5)


def test_score_voting_on_and_off():
    feats = features()
    on = _head(score_voting=True)
    out = on(feats)
    off = _head(score_voting=False)
    off(feats)
    off.set_weights(on.get_weights())
    d_on, d_off = on.predict(out, img_shape()), off.predict(out, img_shape())
    np.testing.assert_array_equal(d_on["labels"], d_off["labels"])
    np.testing.assert_allclose(d_on["scores"], d_off["scores"])
    n = int(d_on["num_detections"][0])
    assert n > 0
    assert np.abs(d_on["boxes"][0, :n] - d_off["boxes"][0, :n]).max() > 1e-3


def test_config_round_trip_and_errors():
    head = _head(score_voting=False)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert clone.get_config() == head.get_config() and clone.score_voting is False
    assert clone.loss_bbox.loss_weight == 1.3 and clone.loss_centerness.loss_weight == 0.5
    with pytest.raises(KdetError, match="covariance_type"):
        _head(covariance_type="tied")
    with pytest.raises(KdetError, match="topk"):
        _head(topk=0)
