"""Shared2FCBBoxHead + StandardRoIHead sampling: empty-gt and one-box loss cases, inference."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.heads.roi import Shared2FCBBoxHead, StandardRoIHead

C = 3


def _roi_head(**kw):
    head = StandardRoIHead(C, in_channels=8, fc_out_channels=16,
                           sampler=dict(num=32, pos_fraction=0.25), **kw)
    head.build()
    return head


def _feats(b=1):
    return [tf.random.normal([b, 64 // s, 64 // s, 8], seed=s) for s in (4, 8, 16, 32, 64)]


def _proposals():
    boxes = tf.constant([[[4, 4, 30, 30], [8, 10, 40, 44], [30, 30, 60, 60], [0, 0, 0, 0]]],
                        tf.float32)
    return boxes, tf.constant([[True, True, True, False]])


def test_empty_gt_all_rois_negative():
    head = _roi_head()
    boxes, valid = _proposals()
    gt = {"boxes": tf.zeros([1, 2, 4]), "labels": tf.constant([[-1, -1]])}
    sampling = head.sample(boxes, valid, gt)
    assert int(sampling.num_pos[0]) == 0 and int(sampling.num_neg[0]) == 3  # padding unused
    losses = head.loss(_feats(), boxes, valid, gt, (64, 64))
    assert np.isfinite(float(losses["loss_cls"])) and float(losses["loss_cls"]) > 0
    assert float(losses["loss_bbox"]) == 0.0


def test_one_box():
    head = _roi_head()
    boxes, valid = _proposals()
    gt = {"boxes": tf.constant([[[8.0, 10.0, 40.0, 44.0], [0, 0, 0, 0]]]),
          "labels": tf.constant([[2, -1]])}
    sampling = head.sample(boxes, valid, gt)
    # The gt itself (prepended) and proposal 1 (IoU 1) are positives of class 2.
    assert int(sampling.num_pos[0]) == 2
    targets = head.bbox_head.get_targets(sampling, gt["boxes"])
    labels = targets["labels"].numpy()[0]
    assert labels[:2].tolist() == [2, 2] and set(labels[2:4]) == {C}
    losses = head.loss(_feats(), boxes, valid, gt, (64, 64))
    assert float(losses["loss_cls"]) > 0 and float(losses["loss_bbox"]) > 0


def test_loss_matches_numpy():
    bh = Shared2FCBBoxHead(C, in_channels=2, roi_feat_size=2, fc_out_channels=4)
    bh.build()
    rng = np.random.default_rng(0)
    cls = tf.constant(rng.normal(size=[4, C + 1]), tf.float32)
    deltas = tf.constant(rng.normal(size=[4, 4 * C]), tf.float32)
    targets = {"labels": tf.constant([[1, C, C, -1]]),
               "label_weights": tf.constant([[1.0, 1.0, 1.0, 0.0]]),
               "bbox_targets": tf.constant(rng.normal(size=[1, 4, 4]), tf.float32),
               "bbox_weights": tf.constant([[1.0, 0.0, 0.0, 0.0]])}
    losses = bh.loss(cls, deltas, targets)
    lg = cls.numpy()
    logp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
    ce = -(logp[0, 1] + logp[1, C] + logp[2, C]) / 3
    np.testing.assert_allclose(float(losses["loss_cls"]), ce, rtol=1e-5)
    l1 = np.abs(deltas.numpy()[0, 4:8] - targets["bbox_targets"].numpy()[0, 0]).sum() / 3
    np.testing.assert_allclose(float(losses["loss_bbox"]), l1, rtol=1e-5)



def _np_giou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def test_giou_loss_on_decoded_boxes_matches_numpy():
    """loss_bbox="giou" (mmdet reg_decoded_bbox + GIoULoss): the positive's class deltas are
    decoded against its RoI (means 0, stds 0.1/0.2) and scored 1 - GIoU against the gt box,
    divided by the number of sampled RoIs; targets carry the gt boxes and the RoIs."""
    bh = Shared2FCBBoxHead(C, in_channels=2, roi_feat_size=2, fc_out_channels=4,
                           loss_bbox="giou", loss_bbox_weight=10.0)
    bh.build()
    rng = np.random.default_rng(1)
    cls = tf.constant(rng.normal(size=[3, C + 1]), tf.float32)
    deltas = rng.normal(size=[3, 4 * C]).astype(np.float32)
    roi = np.array([10.0, 20.0, 50.0, 40.0], np.float32)
    gt = np.array([12.0, 18.0, 47.0, 45.0], np.float32)
    targets = {"labels": tf.constant([[2, C, C]]),
               "label_weights": tf.constant([[1.0, 1.0, 1.0]]),
               "bbox_targets": tf.constant([[gt, np.zeros(4), np.zeros(4)]], tf.float32),
               "rois": tf.constant([[roi, roi, roi]], tf.float32),
               "bbox_weights": tf.constant([[1.0, 0.0, 0.0]])}
    losses = bh.loss(cls, tf.constant(deltas), targets)
    dx, dy, dw, dh = deltas[0, 8:12] * np.array([0.1, 0.1, 0.2, 0.2])
    cx, cy, w, h = 30.0 + dx * 40, 30.0 + dy * 20, 40 * np.exp(dw), 20 * np.exp(dh)
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    np.testing.assert_allclose(float(losses["loss_bbox"]), 10 * (1 - _np_giou(box, gt)) / 3,
                               rtol=1e-4)
    with pytest.raises(Exception, match="loss_bbox"):
        Shared2FCBBoxHead(C, loss_bbox="smooth_l1")


def test_predict_thresholds_and_pads():
    bh = Shared2FCBBoxHead(C, in_channels=2, roi_feat_size=2, fc_out_channels=4)
    bh.build()
    rois = tf.constant([[[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]]], tf.float32)
    valid = tf.constant([[True, True, False]])
    # RoI 0: class 0 at 0.9; RoI 1: background; RoI 2 invalid (would be class 1).
    logits = np.full([3, C + 1], -10.0, np.float32)
    logits[0, 0] = 10.0
    logits[1, C] = 10.0
    logits[2, 1] = 10.0
    dets = bh.predict(rois, valid, tf.constant(logits), tf.zeros([3, 4 * C]),
                      tf.constant([[50.0, 50.0]]), dict(max_per_img=5))
    assert dets["boxes"].shape == (1, 5, 4)
    assert int(dets["num_detections"][0]) == 1
    assert dets["labels"].numpy()[0].tolist() == [0, -1, -1, -1, -1]
    np.testing.assert_allclose(dets["boxes"].numpy()[0, 0], [0, 0, 10, 10], atol=1e-5)


def test_bad_test_cfg():
    from kdet.errors import KdetError
    with pytest.raises(KdetError, match="unknown rcnn test option"):
        StandardRoIHead(C, test_cfg=dict(score_threshold=0.1))
