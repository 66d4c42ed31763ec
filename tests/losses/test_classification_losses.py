"""Cross-entropy (softmax, sigmoid, mask) and focal loss against numpy / torch
references of mmdet v2's losses, incl. weights, avg_factor and zero positives."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.losses import (CrossEntropyLoss, FocalLoss, binary_cross_entropy, cross_entropy,
                         mask_cross_entropy, sigmoid_focal_loss, weight_reduce_loss)

EPS = np.finfo(np.float32).eps  # mmdet's avg_factor guard


def np_log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_bce_logits(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def np_reduce(loss, weight, reduction, avg_factor):
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]
    return loss.sum() / (avg_factor + EPS) if reduction == "mean" else loss


def np_focal(x, labels, weight, gamma, alpha, reduction, avg_factor):
    c = x.shape[-1]
    t = np.zeros_like(x)
    for i, lab in enumerate(labels):
        if 0 <= lab < c:
            t[i, lab] = 1.0
    p = 1 / (1 + np.exp(-x))
    pt = (1 - p) * t + p * (1 - t)
    fw = (alpha * t + (1 - alpha) * (1 - t)) * pt ** gamma
    loss = np_bce_logits(x, t) * fw
    w = None if weight is None else weight[:, None]
    return np_reduce(loss, w, reduction, avg_factor)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (12, 5)).astype(np.float32)
    labels = rng.integers(0, 6, 12).astype(np.int32)  # 5 = background
    weight = rng.uniform(0, 1, 12).astype(np.float32)
    return logits, labels, weight


@pytest.mark.parametrize("reduction,avg", [("mean", None), ("sum", None), ("mean", 3.0),
                                           ("none", None)])
def test_focal_loss_matches_reference(data, reduction, avg):
    logits, labels, weight = data
    got = sigmoid_focal_loss(logits, labels, weight, 2.0, 0.25, reduction, avg).numpy()
    want = np_focal(logits.astype(np.float64), labels, weight, 2.0, 0.25, reduction, avg)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_focal_loss_one_hot_targets_and_wrapper(data):
    logits, labels, _ = data
    onehot = np.eye(6, dtype=np.float32)[labels][:, :5]
    a = sigmoid_focal_loss(logits, labels, avg_factor=4.0)
    b = sigmoid_focal_loss(logits, onehot, avg_factor=4.0)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    loss = FocalLoss(gamma=2.0, alpha=0.25, loss_weight=2.0)
    np.testing.assert_allclose(loss(logits, labels, avg_factor=4.0).numpy(), 2 * a.numpy(),
                               rtol=1e-6)
    assert FocalLoss.from_config(loss.get_config()).loss_weight == 2.0
    with pytest.raises(KdetError, match="sigmoid"):
        FocalLoss(use_sigmoid=False)


def test_focal_zero_positives_no_nan():
    # an image without objects: every anchor is background (label C); RetinaNet
    # normalises by max(num_pos, 1) -- and even avg_factor 0 must stay finite
    logits = tf.Variable(np.full((50, 3), 2.0, np.float32))
    labels = np.full(50, 3, np.int32)
    for avg in (1.0, 0.0):
        with tf.GradientTape() as tape:
            loss = sigmoid_focal_loss(logits, labels, avg_factor=avg)
        grad = tape.gradient(loss, logits)
        assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()
        assert (grad.numpy() > 0).all()  # pushes every score towards background
    # all weights zero -> exactly 0
    assert sigmoid_focal_loss(logits, labels, np.zeros(50), avg_factor=0.0).numpy() == 0.0


@pytest.mark.parametrize("reduction,avg", [("mean", None), ("sum", None), ("mean", 5.0)])
def test_softmax_cross_entropy_matches_torch(data, reduction, avg):
    torch = pytest.importorskip("torch")
    logits, labels, weight = data
    labels = np.minimum(labels, 4)
    labels[3] = -100  # ignore_index
    got = cross_entropy(logits, labels, weight, reduction, avg).numpy()
    t = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(
        labels.astype(np.int64)), reduction="none", ignore_index=-100).numpy()
    np.testing.assert_allclose(got, np_reduce(t, weight, reduction, avg), rtol=1e-5)


def test_cross_entropy_class_weight_and_avg_non_ignore(data):
    torch = pytest.importorskip("torch")
    logits, labels, _ = data
    labels = np.minimum(labels, 4)
    labels[:2] = -1  # kdet padding counts as ignored
    cw = [1.0, 2.0, 0.5, 1.0, 3.0]
    got = CrossEntropyLoss(class_weight=cw, avg_non_ignore=True)(logits, labels).numpy()
    t = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits),
        torch.from_numpy(np.where(labels < 0, -100, labels).astype(np.int64)),
        weight=torch.tensor(cw), reduction="none", ignore_index=-100).numpy()
    np.testing.assert_allclose(got, t.sum() / (10 + EPS), rtol=1e-5)


def test_binary_cross_entropy_expands_labels_like_mmdet(data):
    torch = pytest.importorskip("torch")
    logits, labels, weight = data
    labels[0] = -100
    # mmdet _expand_onehot_labels: id C -> zeros; ignore -> zero weight
    target = np.zeros_like(logits)
    valid = np.ones_like(logits)
    for i, lab in enumerate(labels):
        if lab == -100:
            valid[i] = 0
        elif lab < 5:
            target[i, lab] = 1
    t = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(target), reduction="none").numpy()
    want = (t * weight[:, None] * valid).sum() / (7.0 + EPS)
    got = binary_cross_entropy(logits, labels, weight, avg_factor=7.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # RPN-style objectness: one logit, label 0 = object, 1 = background
    rpn_logits = logits[:, :1]
    rpn_labels = (labels[:] > 2).astype(np.int32)
    got = CrossEntropyLoss(use_sigmoid=True)(rpn_logits, rpn_labels, weight, avg_factor=12.0)
    tgt = (rpn_labels == 0).astype(np.float32)[:, None]
    t = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(rpn_logits), torch.from_numpy(tgt), reduction="none").numpy()
    np.testing.assert_allclose(got.numpy(), (t[:, 0] * weight).sum() / (12 + EPS), rtol=1e-5)
    # class_weight is torch's pos_weight
    cw = [2.0] * 5
    got = binary_cross_entropy(logits, target, class_weight=cw).numpy()
    t = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(target), pos_weight=torch.tensor(cw)).numpy()
    np.testing.assert_allclose(got, t, rtol=1e-5)


def test_mask_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (4, 7, 7, 3)).astype(np.float32)  # NHWC
    targets = (rng.uniform(size=(4, 7, 7)) > 0.5).astype(np.float32)
    labels = np.array([2, 0, 1, -1])
    weight = np.array([1, 1, 1, 0], np.float32)  # last RoI is padding
    got = CrossEntropyLoss(use_mask=True)(logits, targets, labels, roi_weight=weight).numpy()
    pred = torch.from_numpy(np.transpose(logits, (0, 3, 1, 2)))[:3]  # mmdet: NCHW
    sl = pred[torch.arange(3), torch.tensor([2, 0, 1])]
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        sl, torch.from_numpy(targets[:3]), reduction="mean").item()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # unweighted: plain mean over all RoIs; no positive RoIs -> 0, not NaN
    assert np.isfinite(mask_cross_entropy(logits, targets, labels).numpy())
    assert mask_cross_entropy(logits, targets, labels, np.zeros(4)).numpy() == 0.0


def test_weight_reduce_loss_rules():
    loss = np.array([1.0, 2.0, 3.0], np.float32)
    assert weight_reduce_loss(loss, [1, 0, 1]).numpy() == pytest.approx(4 / 3)
    assert weight_reduce_loss(loss, [1, 0, 1], avg_factor=2).numpy() == pytest.approx(2.0)
    assert weight_reduce_loss(np.zeros(0, np.float32)).numpy() == 0.0  # empty: 0, not NaN
    with pytest.raises(KdetError, match="avg_factor"):
        weight_reduce_loss(loss, reduction="sum", avg_factor=2)
    with pytest.raises(KdetError, match="reduction"):
        weight_reduce_loss(loss, reduction="avg")
    with pytest.raises(KdetError, match="exclusive"):
        CrossEntropyLoss(use_sigmoid=True, use_mask=True)
