"""RetinaHead: structure and init, mmdet v2 targets and loss normalisation, the empty-gt and
one-box cases, inference post-processing."""
import math

import keras
import numpy as np
import tensorflow as tf

from kdet.heads.dense import RetinaHead
from kdet.losses import sigmoid_focal_loss
from kdet.ops import pairwise_iou

from .common import IMG, features, gt_empty, gt_one_box, img_shape, max_score, train_head_on


def _head(**kw):
    return RetinaHead(num_classes=3, in_channels=16, feat_channels=16, **kw)


def test_structure_and_prior_init():
    head = _head()
    out = head(features())
    assert [tuple(c.shape) for c in out["cls_scores"]] == [
        (2, IMG // s, IMG // s, 9 * 3) for s in (8, 16, 32, 64, 128)]
    assert out["bbox_preds"][0].shape[-1] == 9 * 4
    names = {w.path.split("/")[-2] for w in head.weights}
    assert {"cls_convs.3.conv", "reg_convs.0.conv", "retina_cls", "retina_reg"} <= names
    np.testing.assert_allclose(head.conv_cls.bias.numpy(), -math.log(99.0), rtol=1e-6)
    # 4 convs per tower: 2 * 4 * (3*3*16*16 + 16) + cls + reg
    expected = 8 * (9 * 16 * 16 + 16) + (9 * 16 * 27 + 27) + (9 * 16 * 36 + 36)
    assert head.count_params() == expected


def test_one_box_targets_and_loss_match_mmdet_rules():
    head = _head()
    feats, gt = features(), gt_one_box()
    out = head(feats)
    anchors = head.get_anchors([(IMG // s, IMG // s) for s in (8, 16, 32, 64, 128)], img_shape())
    t = head.get_targets(anchors, gt, img_shape())
    iou = pairwise_iou(anchors.anchors, gt["boxes"][0, :1])[:, 0].numpy()
    pos = t.pos_mask.numpy()
    # MaxIoU 0.5 / 0.4 / min_pos_iou 0 with low-quality matching.
    expected_pos = (iou >= 0.5) | (iou == iou.max())
    np.testing.assert_array_equal(pos[0], expected_pos)
    assert not pos[1].any()
    np.testing.assert_array_equal(t.label_weights.numpy()[0], ((iou >= 0.5) | (iou < 0.4)
                                                               | expected_pos).astype(np.float32))
    # positive deltas decode back onto the gt box
    idx = np.nonzero(pos[0])[0]
    dec = head.bbox_coder.decode(tf.gather(anchors.anchors, idx), tf.gather(t.bbox_targets[0], idx))
    np.testing.assert_allclose(dec, np.tile(gt["boxes"][0, :1], (len(idx), 1)), atol=1e-3)
    # loss = focal sum / sum_i max(num_pos_i, 1) (image 1 counts 1), L1 likewise
    losses = head.loss(out, gt, img_shape())
    cls = tf.concat([tf.reshape(c, [2, -1, 3]) for c in out["cls_scores"]], 1)
    avg = len(idx) + 1
    ref = float(tf.reduce_sum(sigmoid_focal_loss(cls, t.labels, t.label_weights,
                                                 reduction="none"))) / avg
    np.testing.assert_allclose(float(losses["loss_cls"]), ref, rtol=1e-5)
    reg = tf.concat([tf.reshape(c, [2, -1, 4]) for c in out["bbox_preds"]], 1)
    ref_l1 = float(tf.reduce_sum(tf.abs(reg - t.bbox_targets) * t.bbox_weights[..., None])) / avg
    np.testing.assert_allclose(float(losses["loss_bbox"]), ref_l1, rtol=1e-5)


def test_empty_gt_pushes_every_score_to_background():
    head = _head()
    feats, gt = features(), gt_empty()
    losses = head.loss(head(feats), gt, img_shape())
    assert float(losses["loss_bbox"]) == 0.0
    assert np.isfinite(float(losses["loss_cls"])) and float(losses["loss_cls"]) > 0
    before = max_score(head, feats)
    totals = train_head_on(head, feats, gt, steps=10, lr=0.01)
    assert all(np.isfinite(totals)) and totals[-1] < totals[0]
    assert max_score(head, feats) < before


def test_one_box_training_lowers_both_losses():
    head = _head()
    feats, gt = features(), gt_one_box()
    first = head.loss(head(feats), gt, img_shape())
    train_head_on(head, feats, gt, steps=15, lr=0.01)
    last = head.loss(head(feats), gt, img_shape())
    assert float(last["loss_cls"]) < float(first["loss_cls"])
    assert float(last["loss_bbox"]) < float(first["loss_bbox"])


def test_predict_thresholds_clips_and_pads():
    head = _head(test_cfg={"max_per_img": 20, "score_thr": 0.05})
    feats = features()
    out = head(feats)
    # make one class confident everywhere on level 0
    out["cls_scores"][0] = out["cls_scores"][0] + tf.constant([5.0, -9, -9] * 9)
    shapes = tf.constant([[100.0, 90.0], [128.0, 128.0]])
    dets = head.predict(out, img_shape=shapes)
    assert dets["boxes"].shape == (2, 20, 4) and dets["labels"].dtype == tf.int32
    n = dets["num_detections"].numpy()
    assert (n > 0).all()
    for b in range(2):
        valid = dets["labels"][b, :n[b]].numpy()
        assert (valid == 0).all() and (dets["labels"][b, n[b]:].numpy() == -1).all()
        assert (dets["scores"][b, :n[b]].numpy() > 0.05).all()
        boxes = dets["boxes"][b, :n[b]].numpy()
        assert boxes[:, 2].max() <= shapes[b, 1] + 1e-4 and boxes[:, 3].max() <= shapes[b, 0] + 1e-4
    scores = dets["scores"][0, :n[0]].numpy()
    assert (np.diff(scores) <= 1e-7).all()


def test_config_round_trip():
    head = _head(test_cfg={"iou_threshold": 0.4})
    clone = RetinaHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(head)).test_cfg["iou_threshold"] == 0.4
