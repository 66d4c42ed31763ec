"""DeltaXYWHBBoxCoder against a numpy port of mmdet v2's bbox2delta / delta2bbox."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.core import DeltaXYWHBBoxCoder
from kdet.errors import KdetError


def np_bbox2delta(p, g, means, stds):
    px, py = (p[..., 0] + p[..., 2]) * 0.5, (p[..., 1] + p[..., 3]) * 0.5
    pw, ph = p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]
    gx, gy = (g[..., 0] + g[..., 2]) * 0.5, (g[..., 1] + g[..., 3]) * 0.5
    gw, gh = g[..., 2] - g[..., 0], g[..., 3] - g[..., 1]
    d = np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], -1)
    return (d - np.array(means)) / np.array(stds)


def np_delta2bbox(rois, deltas, means, stds, max_shape=None, wh_ratio_clip=16 / 1000):
    k = deltas.shape[-1] // 4
    d = deltas * np.tile(stds, k) + np.tile(means, k)
    dx, dy, dw, dh = d[..., 0::4], d[..., 1::4], d[..., 2::4], d[..., 3::4]
    px = ((rois[..., 0] + rois[..., 2]) * 0.5)[..., None]
    py = ((rois[..., 1] + rois[..., 3]) * 0.5)[..., None]
    pw = (rois[..., 2] - rois[..., 0])[..., None]
    ph = (rois[..., 3] - rois[..., 1])[..., None]
    max_ratio = abs(np.log(wh_ratio_clip))
    dw, dh = np.clip(dw, -max_ratio, max_ratio), np.clip(dh, -max_ratio, max_ratio)
    gw, gh = pw * np.exp(dw), ph * np.exp(dh)
    gx, gy = px + pw * dx, py + ph * dy
    out = np.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], -1)
    out = out.reshape(deltas.shape)
    if max_shape is not None:
        ms = np.asarray(max_shape, np.float64)
        limit = np.tile(ms[..., [1, 0]], 2 * k)  # (w, h, w, h) per box
        if ms.ndim > 1:
            limit = limit[..., None, :]
        out = np.clip(out, 0, limit)
    return out


def rand_boxes(rng, n, size=200.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def test_mmdet_docstring_example():
    rois = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 5, 5]], np.float32)
    deltas = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 2, -1], [0.7, -1.9, -0.5, 0.3]],
                      np.float32)
    out = DeltaXYWHBBoxCoder().decode(rois, deltas, max_shape=(32, 32)).numpy()
    np.testing.assert_allclose(out, [[0, 0, 1, 1], [0.1409, 0.1409, 2.8591, 2.8591],
                                     [0, 0.3161, 4.1945, 0.6839], [5, 5, 5, 5]], atol=1e-4)


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)])
def test_encode_decode_match_reference(stds):
    rng = np.random.default_rng(0)
    means = (0.0, 0.0, 0.0, 0.0)
    coder = DeltaXYWHBBoxCoder(means, stds)
    anchors = rand_boxes(rng, 2 * 50).reshape(2, 50, 4)
    gts = rand_boxes(rng, 2 * 50).reshape(2, 50, 4)
    deltas = coder.encode(anchors, gts).numpy()
    np.testing.assert_allclose(deltas, np_bbox2delta(anchors.astype(np.float64), gts, means, stds),
                               rtol=1e-4, atol=1e-4)
    # round trip (no clipping), then batched per-image clipping
    back = coder.decode(anchors, deltas).numpy()
    np.testing.assert_allclose(back, gts, rtol=1e-4, atol=1e-3)
    raw = rng.normal(0, 2, (2, 50, 4)).astype(np.float32)
    shapes = np.array([[150, 120], [300, 90]], np.float32)
    got = coder.decode(anchors, raw, max_shape=shapes).numpy()
    np.testing.assert_allclose(got, np_delta2bbox(anchors.astype(np.float64), raw, means, stds,
                                                  shapes), rtol=1e-4, atol=1e-3)
    assert (got[0, :, [0, 2]] <= 120).all() and (got[1, :, [1, 3]] <= 300).all()


def test_class_specific_deltas_and_shared_shape():
    rng = np.random.default_rng(1)
    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    rois = rand_boxes(rng, 6)
    deltas = rng.normal(0, 1, (6, 4 * 3)).astype(np.float32)  # 3 classes
    got = coder.decode(rois, deltas, max_shape=(100, 80)).numpy()
    assert got.shape == (6, 12)
    want = np_delta2bbox(rois.astype(np.float64), deltas, (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2),
                         (100, 80))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_wh_ratio_clip_and_ctr_clamp():
    rois = np.array([[0, 0, 10, 10]], np.float32)
    huge = np.array([[100.0, -100.0, 50.0, -50.0]], np.float32)
    out = DeltaXYWHBBoxCoder().decode(rois, huge).numpy()
    assert np.isfinite(out).all()
    w = out[0, 2] - out[0, 0]
    np.testing.assert_allclose(w, 10 * 1000 / 16, rtol=1e-4)  # exp(|log(16/1000)|)
    clamped = DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=32).decode(rois, huge).numpy()
    np.testing.assert_allclose((clamped[0, 0] + clamped[0, 2]) / 2, 5 + 32, rtol=1e-5)
    np.testing.assert_allclose((clamped[0, 1] + clamped[0, 3]) / 2, 5 - 32, rtol=1e-5)
    # with add_ctr_clamp, dh is only clamped from above: exp(-50) height
    assert clamped[0, 3] - clamped[0, 1] < 1e-6


def test_degenerate_boxes_stay_finite():
    anchors = np.array([[0, 0, 16, 16], [0, 0, 16, 16]], np.float32)
    gts = np.array([[0, 0, 0, 0], [4, 4, 4, 9]], np.float32)  # padding / zero width
    assert np.isfinite(DeltaXYWHBBoxCoder().encode(anchors, gts).numpy()).all()


def test_xla_and_config():
    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    f = tf.function(lambda a, d, s: coder.decode(a, d, max_shape=s), jit_compile=True)
    rng = np.random.default_rng(2)
    a = rand_boxes(rng, 8).reshape(2, 4, 4)
    d = rng.normal(size=(2, 4, 4)).astype(np.float32)
    s = np.array([[64, 64], [128, 32]], np.float32)
    np.testing.assert_allclose(f(a, d, s).numpy(), coder.decode(a, d, s).numpy(), rtol=1e-6)
    again = DeltaXYWHBBoxCoder.from_config(coder.get_config())
    assert again.target_stds == (0.1, 0.1, 0.2, 0.2)
    with pytest.raises(KdetError, match="4 values"):
        DeltaXYWHBBoxCoder(target_means=(0, 0))
    with pytest.raises(KdetError, match="multiple of 4"):
        coder.decode(a, np.zeros((2, 4, 6), np.float32))
