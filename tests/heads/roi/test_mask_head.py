"""FCNMaskHead: targets cropped from gt bitmaps, empty / one-box losses, inference."""
import numpy as np
import tensorflow as tf

from kdet.heads.roi import FCNMaskHead, StandardRoIHead

C = 3


def test_shapes_and_targets():
    head = FCNMaskHead(C, in_channels=4, conv_out_channels=8)
    head.build()
    assert head(tf.zeros([5, 14, 14, 4])).shape == (5, 28, 28, C)
    masks = np.zeros([1, 2, 64, 64], np.uint8)
    masks[0, 1, 8:36, 8:36] = 1  # object 1: square [8, 36)
    boxes = tf.constant([[[8, 8, 36, 36], [8, 8, 64, 36]]], tf.float32)
    t = head.get_targets(boxes, tf.constant([[1, 1]]), tf.constant(masks), (64, 64)).numpy()
    assert t.shape == (1, 2, 28, 28)
    assert t[0, 0].all()  # the RoI is exactly the square
    assert t[0, 1, :, :13].all() and not t[0, 1, :, 15:].any()  # right half is background
    # A mask canvas at half resolution (pipeline mask_size) gives the same target.
    half = masks[:, :, ::2, ::2]
    t2 = head.get_targets(boxes[:, :1], tf.constant([[1]]), tf.constant(half), (64, 64)).numpy()
    np.testing.assert_array_equal(t2[0, 0], t[0, 0])


def _roi_head():
    head = StandardRoIHead(C, in_channels=8, fc_out_channels=16, with_mask=True,
                           mask_conv_channels=8, sampler=dict(num=32, pos_fraction=0.25))
    head.build()
    return head


def _feats():
    return [tf.random.normal([1, 64 // s, 64 // s, 8], seed=s) for s in (4, 8, 16, 32, 64)]


def test_empty_gt_mask_loss_zero():
    head = _roi_head()
    gt = {"boxes": tf.zeros([1, 2, 4]), "labels": tf.constant([[-1, -1]]),
          "masks": tf.zeros([1, 2, 64, 64], tf.uint8)}
    losses = head.loss(_feats(), tf.constant([[[4, 4, 30, 30.0]]]), tf.constant([[True]]), gt,
                       (64, 64))
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_bbox"]) == 0.0
    assert np.isfinite(float(losses["loss_cls"]))


def test_one_box_mask_loss_matches_numpy():
    head = _roi_head()
    masks = np.zeros([1, 2, 64, 64], np.uint8)
    masks[0, 0, 10:40, 12:44] = 1
    gt = {"boxes": tf.constant([[[12.0, 10.0, 44.0, 40.0], [0, 0, 0, 0]]]),
          "labels": tf.constant([[1, -1]]), "masks": tf.constant(masks)}
    feats = _feats()
    losses = head.loss(feats, tf.constant([[[0, 0, 5, 5.0]]]), tf.constant([[True]]), gt, (64, 64))
    # Only the prepended gt box is positive; its target is all ones.
    from kdet.heads.roi.roi_extractor import boxes_to_rois
    logits = head.mask_head(head.mask_roi_extractor(feats, boxes_to_rois(gt["boxes"][:, :1])))
    x = logits.numpy()[0, :, :, 1]
    bce = np.maximum(x, 0) - x + np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(float(losses["loss_mask"]), bce.mean(), rtol=1e-4)


def test_predict_masks_follow_labels():
    head = _roi_head()
    dets = head.predict(_feats(), tf.constant([[[4, 4, 30, 30.0], [0, 0, 0, 0]]]),
                        tf.constant([[True, False]]), tf.constant([[64.0, 64.0]]))
    assert dets["masks"].shape == (1, 100, 28, 28)
    pad = dets["labels"].numpy()[0] < 0
    assert np.all(dets["masks"].numpy()[0][pad] == 0)
    m = dets["masks"].numpy()
    assert m.min() >= 0 and m.max() <= 1
