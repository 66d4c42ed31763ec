"""MaxIoUAssigner (batched, padded) against a per-image numpy port of mmdet v2's
MaxIoUAssigner.assign / assign_wrt_overlaps on random cases."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.core import MaxIoUAssigner
from kdet.errors import KdetError
from kdet.ops import pairwise_overlaps


def mmdet_assign(cfg, bboxes, gt_bboxes, gt_labels, gt_ignore_boxes):
    """mmdet's algorithm on compact (unpadded) arrays of one image, numpy.
    IoU/IoF come from kdet.ops (tested separately) so ties compare bit-exactly."""
    n, k = len(bboxes), len(gt_bboxes)
    overlaps = (pairwise_overlaps(gt_bboxes, bboxes).numpy() if k
                else np.zeros((0, n), np.float32))
    if cfg.get("ignore_iof_thr", -1) > 0 and len(gt_ignore_boxes) and n:
        if cfg.get("ignore_wrt_candidates", True):
            iof = pairwise_overlaps(bboxes, gt_ignore_boxes, "iof").numpy().max(axis=1)
        else:
            iof = pairwise_overlaps(gt_ignore_boxes, bboxes, "iof").numpy().max(axis=0)
        overlaps[:, iof > cfg["ignore_iof_thr"]] = -1
    gt_inds = np.full(n, -1, np.int64)
    if k == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.float32), np.full(n, -1)
    max_ov, argmax_ov = overlaps.max(0), overlaps.argmax(0)
    gt_max, gt_argmax = overlaps.max(1), overlaps.argmax(1)
    neg = cfg["neg_iou_thr"]
    if isinstance(neg, tuple):
        gt_inds[(max_ov >= neg[0]) & (max_ov < neg[1])] = 0
    else:
        gt_inds[(max_ov >= 0) & (max_ov < neg)] = 0
    pos = max_ov >= cfg["pos_iou_thr"]
    gt_inds[pos] = argmax_ov[pos] + 1
    if cfg.get("match_low_quality", True):
        for i in range(k):
            # kdet's one deviation: a gt overlapping no box gets no low-quality match
            if gt_max[i] >= cfg.get("min_pos_iou", 0.0) and gt_max[i] > 0:
                if cfg.get("gt_max_assign_all", True):
                    gt_inds[overlaps[i, :] == gt_max[i]] = i + 1
                else:
                    gt_inds[gt_argmax[i]] = i + 1
    labels = np.full(n, -1)
    labels[gt_inds > 0] = gt_labels[gt_inds[gt_inds > 0] - 1]
    return gt_inds, max_ov, labels


def make_case(rng, batch=3, num_anchors=60, max_gt=6):
    # anchors on an integer grid, some duplicated, so IoU ties happen
    xy = rng.integers(0, 80, (batch, num_anchors, 2)).astype(np.float32)
    wh = rng.choice([8.0, 16.0, 24.0], (batch, num_anchors, 2)).astype(np.float32)
    anchors = np.concatenate([xy, xy + wh], -1)
    anchors[:, 1] = anchors[:, 0]
    gxy = rng.integers(0, 80, (batch, max_gt, 2)).astype(np.float32)
    gwh = rng.integers(4, 30, (batch, max_gt, 2)).astype(np.float32)
    gt = np.concatenate([gxy, gxy + gwh], -1)
    # half the gts are jittered anchors, so IoUs above 0.5-0.7 occur too
    picks = rng.integers(0, num_anchors, (batch, max_gt // 2))
    jitter = rng.uniform(-2, 2, (batch, max_gt // 2, 4)).astype(np.float32)
    gt[:, :max_gt // 2] = np.take_along_axis(anchors, picks[..., None], 1) + jitter
    labels = rng.integers(0, 5, (batch, max_gt)).astype(np.int32)
    counts = rng.integers(0, max_gt + 1, batch)
    counts[0] = 0  # always one image without objects
    for b in range(batch):
        labels[b, counts[b]:] = -1
        gt[b, counts[b]:] = 0.0
    ignore = (rng.uniform(size=(batch, max_gt)) < 0.25) & (labels >= 0)
    valid = rng.uniform(size=(batch, num_anchors)) < 0.85
    return anchors, gt, labels, ignore, valid


def check_against_reference(cfg, anchors, gt, labels, ignore, valid):
    assigner = MaxIoUAssigner(**cfg)
    res = assigner.assign(anchors, gt, labels, ignore, valid)
    for b in range(anchors.shape[0]):
        real = (labels[b] >= 0) & ~ignore[b]
        crowd = (labels[b] >= 0) & ignore[b]
        slots = np.nonzero(real)[0]
        v = np.nonzero(valid[b])[0]
        ref_inds, ref_ov, ref_labels = mmdet_assign(cfg, anchors[b][v], gt[b][slots],
                                                    labels[b][slots], gt[b][crowd])
        # mmdet's k indexes the compact real-gt list; kdet's the padded slots.
        lookup = np.concatenate([[0], slots + 1])  # compact k -> padded slot + 1
        want = np.where(ref_inds > 0, lookup[np.maximum(ref_inds, 0)], ref_inds)
        got = res.gt_inds.numpy()[b]
        np.testing.assert_array_equal(got[v], want)
        assert (got[~valid[b]] == -1).all()
        np.testing.assert_allclose(res.max_overlaps.numpy()[b][v], ref_ov, atol=1e-6)
        np.testing.assert_array_equal(res.labels.numpy()[b][v], ref_labels)
    return int((res.gt_inds.numpy() > 0).sum())


CONFIGS = [
    dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, ignore_iof_thr=-1),  # RPN
    dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False),  # R-CNN
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, ignore_iof_thr=-1),  # RetinaNet
    dict(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.4), min_pos_iou=0.1, ignore_iof_thr=0.5),
    dict(pos_iou_thr=0.6, neg_iou_thr=0.3, gt_max_assign_all=False, ignore_iof_thr=0.3,
         ignore_wrt_candidates=False),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_matches_mmdet_reference(cfg):
    rng = np.random.default_rng(len(str(cfg)))
    positives = sum(check_against_reference(cfg, *make_case(rng)) for _ in range(3))
    assert positives > 0  # the random cases do reach the positive branches


def test_shared_anchors_padding_and_hand_case():
    anchors = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 10, 9], [50, 50, 60, 60]],
                       np.float32)
    gt = np.array([[[0, 0, 10, 9], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[3, -1]], np.int32)
    res = MaxIoUAssigner(0.5, 0.5).assign(anchors, gt, labels)
    np.testing.assert_array_equal(res.gt_inds.numpy(), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(res.labels.numpy(), [[3, -1, 3, -1]])
    np.testing.assert_allclose(res.max_overlaps.numpy(), [[0.9, 0, 1, 0]], atol=1e-6)
    np.testing.assert_array_equal(res.pos_mask.numpy(), [[True, False, True, False]])
    np.testing.assert_allclose(res.gather_gt(gt).numpy()[0, 0], [0, 0, 10, 9])


def test_degenerate_gt_does_not_take_every_anchor():
    anchors = np.array([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32]], np.float32)
    gt = np.array([[[5, 5, 5, 9], [0, 0, 16, 14]]], np.float32)  # zero-width box first
    labels = np.array([[1, 2]], np.int32)
    res = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.0).assign(anchors, gt, labels)  # RetinaNet
    np.testing.assert_array_equal(res.gt_inds.numpy(), [[2, 0, 0]])


def test_xla_compiles_and_matches():
    rng = np.random.default_rng(7)
    anchors, gt, labels, ignore, valid = make_case(rng, batch=2, num_anchors=30)
    assigner = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3, ignore_iof_thr=0.5)
    f = tf.function(assigner.assign, jit_compile=True)
    got = f(anchors, gt, labels, ignore, valid)
    want = assigner.assign(anchors, gt, labels, ignore, valid)
    np.testing.assert_array_equal(got.gt_inds.numpy(), want.gt_inds.numpy())


def test_bad_arguments():
    with pytest.raises(KdetError, match="neg_iou_thr"):
        MaxIoUAssigner(0.5, (0.4, 0.1))
    with pytest.raises(KdetError, match="neg_iou_thr"):
        MaxIoUAssigner(0.5, "low")
    with pytest.raises(KdetError, match="gt_labels"):
        MaxIoUAssigner(0.5, 0.4).assign(np.zeros((3, 4)), np.zeros((1, 2, 4)), np.zeros(2))
    cfg = MaxIoUAssigner(0.5, (0.1, 0.4)).get_config()
    assert MaxIoUAssigner.from_config(cfg).neg_iou_thr == (0.1, 0.4)
