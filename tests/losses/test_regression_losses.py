"""L1 / smooth L1 / IoU / GIoU losses against numpy and torch references of mmdet v2's."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses import (GIoULoss, IoULoss, L1Loss, SmoothL1Loss, giou_loss, iou_loss, l1_loss,
                         smooth_l1_loss)

EPS = np.finfo(np.float32).eps


def np_aligned(a, b, mode, eps=1e-6):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = np.maximum(area_a + area_b - inter, eps)
    iou = inter / union
    if mode == "iou":
        return iou
    ewh = np.clip(np.maximum(a[:, 2:], b[:, 2:]) - np.minimum(a[:, :2], b[:, :2]), 0, None)
    enc = np.maximum(ewh[:, 0] * ewh[:, 1], eps)
    return iou - (enc - union) / enc


def boxes(rng, n):
    xy = rng.uniform(0, 50, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2))], -1).astype(np.float32)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    return boxes(rng, 10), boxes(rng, 10), rng.uniform(0, 1, 10).astype(np.float32)


def test_l1_and_smooth_l1_match_torch(pair):
    torch = pytest.importorskip("torch")
    p, t, w = pair
    w4 = np.repeat(w[:, None], 4, 1)
    tp, tt = torch.from_numpy(p / 10), torch.from_numpy(t / 10)
    l1 = torch.nn.functional.l1_loss(tp, tt, reduction="none").numpy()
    np.testing.assert_allclose(l1_loss(p / 10, t / 10, w4, avg_factor=3.0).numpy(),
                               (l1 * w4).sum() / (3 + EPS), rtol=1e-5)
    np.testing.assert_allclose(L1Loss(loss_weight=2.0)(p / 10, t / 10).numpy(), 2 * l1.mean(),
                               rtol=1e-5)
    for beta in (1.0, 1 / 9):
        sl1 = torch.nn.functional.smooth_l1_loss(tp, tt, beta=beta, reduction="none").numpy()
        np.testing.assert_allclose(smooth_l1_loss(p / 10, t / 10, beta, w4, "sum").numpy(),
                                   (sl1 * w4).sum(), rtol=1e-5)
        np.testing.assert_allclose(SmoothL1Loss(beta)(p / 10, t / 10, avg_factor=2).numpy(),
                                   sl1.sum() / (2 + EPS), rtol=1e-5)
    with pytest.raises(KdetError, match="beta"):
        SmoothL1Loss(beta=0.0)


@pytest.mark.parametrize("mode", ["log", "linear", "square"])
def test_iou_loss_matches_reference(pair, mode):
    p, t, w = pair
    iou = np.maximum(np_aligned(p.astype(np.float64), t, "iou"), 1e-6)
    elem = {"log": -np.log(iou), "linear": 1 - iou, "square": 1 - iou ** 2}[mode]
    got = iou_loss(p, t, w, mode=mode, avg_factor=4.0).numpy()
    np.testing.assert_allclose(got, (elem * w).sum() / (4 + EPS), rtol=1e-5)
    np.testing.assert_allclose(IoULoss(mode=mode)(p, t, reduction_override="none").numpy(),
                               elem, rtol=1e-5)


def test_giou_loss_matches_reference_and_coordinate_weights(pair):
    p, t, w = pair
    t[0] = p[0]  # perfect box: loss 0
    t[1] = [200, 200, 210, 220]  # disjoint: loss > 1
    elem = 1 - np_aligned(p.astype(np.float64), t, "giou")
    assert abs(elem[0]) < 1e-6 and elem[1] > 1
    np.testing.assert_allclose(giou_loss(p, t, w, avg_factor=5.0).numpy(),
                               (elem * w).sum() / (5 + EPS), rtol=1e-5)
    # mmdet: a [N, 4] weight is averaged over the coordinates
    w4 = np.stack([w, w, 0 * w, w], 1)
    np.testing.assert_allclose(GIoULoss(loss_weight=2.0)(p, t, w4).numpy(),
                               2 * (elem * w * 0.75).mean(), rtol=1e-5)


def test_zero_positive_cases_are_finite():
    # padded / degenerate boxes with zero weight: loss 0 and finite gradients
    pred = tf.Variable(np.zeros((6, 4), np.float32))
    target = np.zeros((6, 4), np.float32)
    weight = np.zeros(6, np.float32)
    for fn in (lambda: giou_loss(pred, target, weight, avg_factor=0.0),
               lambda: iou_loss(pred, target, weight, avg_factor=0.0),
               lambda: l1_loss(pred, target, weight[:, None], avg_factor=0.0),
               lambda: smooth_l1_loss(pred, target, 1.0, weight[:, None], avg_factor=0.0)):
        with tf.GradientTape() as tape:
            loss = fn()
        grad = tape.gradient(loss, pred)
        assert loss.numpy() == 0.0
        assert np.isfinite(grad.numpy()).all()
    # empty inputs: 0, not NaN (mmdet's L1Loss guard)
    empty = np.zeros((0, 4), np.float32)
    assert l1_loss(empty, empty).numpy() == 0.0
    assert giou_loss(empty, empty).numpy() == 0.0


def test_batched_shapes_and_config():
    rng = np.random.default_rng(4)
    p, t = boxes(rng, 6).reshape(2, 3, 4), boxes(rng, 6).reshape(2, 3, 4)
    w = np.ones((2, 3), np.float32)  # per-box weights on a batch: not averaged away
    np.testing.assert_allclose(giou_loss(p, t, w, reduction="none").numpy().shape, (2, 3))
    np.testing.assert_allclose(giou_loss(p, t, w).numpy(),
                               giou_loss(p.reshape(6, 4), t.reshape(6, 4)).numpy(), rtol=1e-6)
    for cls, kw in ((IoULoss, {"mode": "linear"}), (GIoULoss, {"loss_weight": 2.0}),
                    (SmoothL1Loss, {"beta": 0.5}), (L1Loss, {})):
        obj = cls(**kw)
        assert cls.from_config(obj.get_config()).get_config() == obj.get_config()
    with pytest.raises(KdetError, match="mode"):
        IoULoss(mode="cubic")
