"""ATSSAssigner on hand-built cases and against a per-image numpy port of mmdet v2's
ATSSAssigner.assign (invalid anchors removed first, as mmdet's heads do)."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.core import AnchorGenerator, ATSSAssigner
from kdet.errors import KdetError
from kdet.ops import pairwise_overlaps

INF = 100000000


def mmdet_atss(bboxes, num_level_bboxes, gt_bboxes, gt_labels, topk, ignore_boxes=None,
               ignore_iof_thr=-1):
    n, k = len(bboxes), len(gt_bboxes)
    assigned = np.zeros(n, np.int64)
    if k == 0 or n == 0:
        return assigned, np.full(n, -1)
    overlaps = pairwise_overlaps(bboxes, gt_bboxes).numpy()  # [n, k]
    gt_c = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2.0
    b_c = (bboxes[:, :2] + bboxes[:, 2:]) / 2.0
    dist = np.sqrt(((b_c[:, None, :] - gt_c[None, :, :]) ** 2).sum(-1))
    if ignore_iof_thr > 0 and ignore_boxes is not None and len(ignore_boxes):
        ign = pairwise_overlaps(bboxes, ignore_boxes, "iof").numpy().max(1) > ignore_iof_thr
        dist[ign, :] = INF
        assigned[ign] = -1
    cands, start = [], 0
    for count in num_level_bboxes:
        sel = min(topk, count)
        if sel:
            order = np.argsort(dist[start:start + count], axis=0, kind="stable")[:sel]
            cands.append(order + start)
        start += count
    cands = np.concatenate(cands, 0)  # [K, k]
    cand_ov = overlaps[cands, np.arange(k)]
    thr = cand_ov.mean(0) + cand_ov.std(0, ddof=1)
    is_pos = cand_ov >= thr[None, :]
    cx, cy = b_c[cands, 0], b_c[cands, 1]
    inside = np.stack([cx - gt_bboxes[:, 0], cy - gt_bboxes[:, 1],
                       gt_bboxes[:, 2] - cx, gt_bboxes[:, 3] - cy], 0).min(0) > 0.01
    is_pos &= inside
    ov_inf = np.full((n, k), -INF, np.float64)
    for j in range(k):
        ov_inf[cands[is_pos[:, j], j], j] = overlaps[cands[is_pos[:, j], j], j]
    max_ov, arg = ov_inf.max(1), ov_inf.argmax(1)
    assigned[max_ov != -INF] = arg[max_ov != -INF] + 1
    labels = np.full(n, -1)
    labels[assigned > 0] = gt_labels[assigned[assigned > 0] - 1]
    return assigned, labels


def test_hand_case_mean_plus_std():
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    anchors = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [3, 3, 13, 13], [20, 20, 30, 30]],
                       np.float32)
    # IoUs 1, 0.6807, 0.3245, 0: mean 0.5013 + std 0.4334 = 0.9347 -> only anchor 0
    res = ATSSAssigner(topk=4).assign(anchors, [4], gt, np.array([[2]]))
    np.testing.assert_array_equal(res.gt_inds.numpy(), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(res.labels.numpy(), [[2, -1, -1, -1]])
    np.testing.assert_allclose(res.max_overlaps.numpy(), [[1, 0, 0, 0]])


def test_hand_case_center_must_be_inside():
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    far = [[30 + 3 * i, 30, 40 + 3 * i, 40] for i in range(8)]
    # anchor 0: IoU 0.5 but centre (5, 0) on the gt's border; anchor 1: IoU 0.667 inside.
    anchors = np.array([[0, -10, 10, 10], [2, 0, 12, 10]] + far, np.float32)
    res = ATSSAssigner(topk=10).assign(anchors, [10], gt, np.array([[0]]))
    # threshold = 0.1167 + 0.249 = 0.366 < 0.5, yet anchor 0 is rejected by its centre
    np.testing.assert_array_equal(res.gt_inds.numpy()[0], [0, 1] + [0] * 8)


def test_hand_case_overlap_resolved_by_max_iou_and_padding():
    anchors = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [40, 40, 50, 50], [60, 60, 70, 70]],
                       np.float32)
    gts = np.array([[[0, 0, 10, 10], [1, 0, 13, 10], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[4, 7, -1]])
    res = ATSSAssigner(topk=4).assign(anchors, [4], gts, labels)
    # anchor 1 is positive for both gts (IoU 0.667 vs 0.833): gt 2 wins; anchor 0 -> gt 1
    np.testing.assert_array_equal(res.gt_inds.numpy(), [[1, 2, 0, 0]])
    np.testing.assert_array_equal(res.labels.numpy(), [[4, 7, -1, -1]])


def test_no_gt_and_invalid_anchors():
    anchors = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], np.float32)
    gts = np.zeros((2, 1, 4), np.float32)
    gts[1, 0] = [0, 0, 10, 10]
    labels = np.array([[-1], [0]])
    valid = np.array([[True, False], [False, True]])
    res = ATSSAssigner(topk=9).assign(anchors, [2], gts, labels, anchor_valid=valid)
    np.testing.assert_array_equal(res.gt_inds.numpy(), [[0, -1], [-1, 1]])


def random_case(rng, gen, sizes, batch=2, max_gt=5):
    anchors = gen(sizes).numpy()
    a = anchors.shape[0]
    gxy = rng.uniform(0, 60, (batch, max_gt, 2))
    gwh = rng.uniform(6, 40, (batch, max_gt, 2))
    gt = np.concatenate([gxy, gxy + gwh], -1).astype(np.float32)
    labels = rng.integers(0, 3, (batch, max_gt)).astype(np.int32)
    counts = rng.integers(1, max_gt + 1, batch)
    for b in range(batch):
        labels[b, counts[b]:] = -1
    ignore = (rng.uniform(size=(batch, max_gt)) < 0.2) & (labels >= 0)
    valid = rng.uniform(size=(batch, a)) < 0.9
    return anchors, gt, labels, ignore, valid


@pytest.mark.parametrize("ignore_iof_thr", [-1.0, 0.5])
def test_matches_mmdet_reference_multi_level(ignore_iof_thr):
    # ATSS anchors: one square anchor per location, octave_base_scale 8 (mmdet atss config)
    gen = AnchorGenerator(strides=(8, 16, 32), ratios=(1.0,), octave_base_scale=8,
                          scales_per_octave=1)
    sizes = [(10, 10), (5, 5), (3, 3)]
    level_counts = gen.num_anchors_per_level(sizes)
    assigner = ATSSAssigner(topk=9, ignore_iof_thr=ignore_iof_thr)
    rng = np.random.default_rng(3)
    positives = 0
    for _ in range(3):
        anchors, gt, labels, ignore, valid = random_case(rng, gen, sizes)
        res = assigner.assign(anchors, level_counts, gt, labels, ignore, valid)
        for b in range(gt.shape[0]):
            v = valid[b]
            real = np.nonzero((labels[b] >= 0) & ~ignore[b])[0]
            crowd = (labels[b] >= 0) & ignore[b]
            level_of = np.repeat(np.arange(3), level_counts)
            counts_v = [int((v & (level_of == i)).sum()) for i in range(3)]
            ref, ref_labels = mmdet_atss(anchors[v], counts_v, gt[b][real], labels[b][real], 9,
                                         gt[b][crowd], ignore_iof_thr)
            lookup = np.concatenate([[0], real + 1])
            want = np.where(ref > 0, lookup[np.maximum(ref, 0)], ref)
            got = res.gt_inds.numpy()[b]
            np.testing.assert_array_equal(got[v], want)
            assert (got[~v] == -1).all()
            np.testing.assert_array_equal(res.labels.numpy()[b][v], ref_labels)
            positives += int((want > 0).sum())
    assert positives > 10  # the cases do exercise positives


def test_xla_and_errors():
    gen = AnchorGenerator(strides=(8, 16), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
    sizes = [(6, 6), (3, 3)]
    anchors, gt, labels, ignore, valid = random_case(np.random.default_rng(5), gen, sizes)
    assigner = ATSSAssigner(topk=9)
    f = tf.function(lambda *a: assigner.assign(a[0], [36, 9], *a[1:]), jit_compile=True)
    got = f(anchors, gt, labels, ignore, valid)
    want = assigner.assign(anchors, [36, 9], gt, labels, ignore, valid)
    np.testing.assert_array_equal(got.gt_inds.numpy(), want.gt_inds.numpy())
    with pytest.raises(KdetError, match="num_level_anchors"):
        assigner.assign(anchors, [36, 8], gt, labels)
    with pytest.raises(KdetError, match="topk"):
        ATSSAssigner(topk=0)
