"""RPNHead: mmdet-style empty-gt / one-box loss cases, targets, static proposals."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.heads import RPNHead

IMG = 64


def _features(b=1, ch=8):
    # P2..P6 of a 64x64 input (strides 4..64).
    return [tf.random.normal([b, IMG // s, IMG // s, ch], seed=i)
            for i, s in enumerate((4, 8, 16, 32, 64))]


def _head(**kw):
    head = RPNHead(in_channels=8, feat_channels=8, **kw)
    head.build([(None, None, None, 8)])
    return head


def _gt(boxes, labels):
    return {"boxes": tf.constant(boxes, tf.float32), "labels": tf.constant(labels, tf.int32)}


def test_empty_gt_all_anchors_negative():
    head = _head()
    outs = head(_features())
    losses = head.loss(outs, _gt(np.zeros([1, 2, 4]), [[-1, -1]]))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}
    assert np.isfinite(float(losses["loss_rpn_cls"])) and float(losses["loss_rpn_cls"]) > 0
    assert float(losses["loss_rpn_bbox"]) == 0.0
    # Targets: no positive anchor, 256 sampled negatives.
    from kdet.heads.dense.base import featmap_sizes
    img_shape = tf.constant([[IMG, IMG]], tf.float32)
    anchors = head.get_anchors(featmap_sizes(outs["cls_scores"]), img_shape)
    t = head.get_targets(anchors, _gt(np.zeros([1, 2, 4]), [[-1, -1]]), img_shape)
    assert int(tf.reduce_sum(tf.cast(t.pos_mask, tf.int32))) == 0
    assert int(tf.reduce_sum(tf.cast(t.label_weights > 0, tf.int32))) == 256


def test_one_box_gives_positive_losses_and_targets():
    head = _head()
    outs = head(_features())
    gt = _gt([[[8.0, 10.0, 40.0, 44.0], [0, 0, 0, 0]]], [[2, -1]])  # class 2 -> objectness 1
    losses = head.loss(outs, gt)
    assert float(losses["loss_rpn_cls"]) > 0 and float(losses["loss_rpn_bbox"]) > 0
    from kdet.heads.dense.base import featmap_sizes
    img_shape = tf.constant([[IMG, IMG]], tf.float32)
    anchors = head.get_anchors(featmap_sizes(outs["cls_scores"]), img_shape)
    rpn_gt = dict(gt, labels=tf.constant([[0, -1]]))
    t = head.get_targets(anchors, rpn_gt, img_shape)
    pos = t.pos_mask.numpy()[0]
    assert pos.sum() >= 1  # match_low_quality guarantees the best anchor
    assert set(t.labels.numpy()[0][pos]) == {0}
    # The best-IoU anchor is positive (min_pos_iou 0.3).
    from kdet.ops import pairwise_iou
    iou = pairwise_iou(anchors.anchors, gt["boxes"][0, :1]).numpy()[:, 0]
    assert pos[np.argmax(iou)]
    # Loss normaliser: max(#pos, 1) + max(#neg, 1) over 256 samples.
    assert float(head.loss_avg_factor(t)) == 256.0


def test_loss_matches_numpy_reference():
    head = _head()
    outs = head(_features())
    gt = _gt([[[8.0, 10.0, 40.0, 44.0]]], [[0]])
    seed = tf.constant([3, 4])
    losses = head.loss(outs, dict(gt, sample_seed=seed))
    from kdet.heads.dense.base import featmap_sizes, flatten_levels
    img_shape = tf.constant([[IMG, IMG]], tf.float32)
    anchors = head.get_anchors(featmap_sizes(outs["cls_scores"]), img_shape)
    t = head.get_targets(anchors, dict(gt, sample_seed=seed), img_shape)
    logits = flatten_levels(outs["cls_scores"], 1).numpy()[0, :, 0]
    deltas = flatten_levels(outs["bbox_preds"], 4).numpy()[0]
    w = t.label_weights.numpy()[0]
    y = t.pos_mask.numpy()[0].astype(np.float64)
    bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    n = 256.0
    np.testing.assert_allclose(float(losses["loss_rpn_cls"]), (bce * w).sum() / n, rtol=1e-4)
    l1 = np.abs(deltas - t.bbox_targets.numpy()[0]).sum(-1)
    np.testing.assert_allclose(float(losses["loss_rpn_bbox"]), (l1 * y).sum() / n, rtol=1e-4)


def test_proposals_static_padded_and_sorted():
    head = _head(train_proposal_cfg=dict(nms_pre=50, max_per_img=40),
                 test_cfg=dict(nms_pre=30, max_per_img=20))
    feats = _features(b=2)
    outs = head(feats)
    img_shape = tf.constant([[64, 64], [48, 32]], tf.float32)
    boxes, scores, valid = head.get_proposals(outs, img_shape, training=True)
    assert boxes.shape == (2, 40, 4) and scores.shape == (2, 40) and valid.shape == (2, 40)
    boxes, scores, valid = head.get_proposals(outs, img_shape, training=False)
    assert boxes.shape == (2, 20, 4)
    b, s, v = boxes.numpy(), scores.numpy(), valid.numpy()
    for i in range(2):
        k = v[i].sum()
        assert v[i][:k].all() and not v[i][k:].any()  # valid first
        assert np.all(np.diff(s[i][:k]) <= 1e-7)  # descending objectness
        assert np.all(b[i][:k, 2] <= img_shape[i, 1].numpy() + 1e-4)  # clipped to width
        assert np.all(b[i][:k, 3] <= img_shape[i, 0].numpy() + 1e-4)
        assert np.all(b[i][k:] == 0)
    dets = head.predict(outs, img_shape)
    assert dets["boxes"].shape == (2, 20, 4)


def test_per_level_nms():
    """Two identical boxes on different levels both survive (NMS is per level, as mmdet)."""
    head = _head(test_cfg=dict(nms_pre=1, max_per_img=5))
    # Zero deltas: each level proposes its single best anchor.
    outs = head(_features())
    _, _, valid = head.get_proposals(outs, tf.constant([[64, 64]], tf.float32))
    assert int(tf.reduce_sum(tf.cast(valid, tf.int32))) == 5  # one per level


def test_bad_config():
    with pytest.raises(KdetError, match="objectness"):
        RPNHead(num_classes=3)
    with pytest.raises(KdetError, match="unknown RPN proposal option"):
        RPNHead(test_cfg=dict(nms_thr=0.7))
    with pytest.raises(KdetError, match="gt boxes as proposals"):
        RPNHead(sampler=dict(num=256, pos_fraction=0.5, add_gt_as_proposals=True))


def test_config_round_trip():
    head = _head(train_proposal_cfg=dict(max_per_img=300))
    clone = RPNHead.from_config(head.get_config())
    assert clone.train_proposal_cfg == head.train_proposal_cfg
    assert clone.rpn_test_cfg == head.rpn_test_cfg
    assert clone.sampler.num == 256 and clone.assigner.pos_iou_thr == 0.7


def test_proposals_with_unknown_feature_sizes():
    """predict traced for any image size: levels smaller than nms_pre are padded, not an error."""
    head = _head(test_cfg=dict(nms_pre=500, max_per_img=30))
    feats = _features()
    spec = [tf.TensorSpec([1, None, None, 8]) for _ in feats]

    @tf.function(input_signature=[spec])
    def propose(levels):
        outs = head(list(levels))
        return head.get_proposals(outs, tf.constant([[64.0, 64.0]]))

    boxes, scores, valid = propose(feats)
    ref_boxes, ref_scores, ref_valid = head.get_proposals(head(feats),
                                                          tf.constant([[64.0, 64.0]]))
    assert boxes.shape == (1, 30, 4)
    np.testing.assert_array_equal(valid.numpy(), ref_valid.numpy())
    np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), ref_boxes.numpy(), rtol=1e-5, atol=1e-4)
