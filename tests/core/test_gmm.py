"""kdet.core.gmm: the in-graph two-component 1-D GMM against scikit-learn's GaussianMixture
(PAA's settings: means_init (min, max), weights 0.5, precisions 1, diag covariance)."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.core.gmm import fit_gmm_1d, gmm_predict
from kdet.errors import KdetError

skm = pytest.importorskip("sklearn.mixture", reason="scikit-learn (test extra) is the reference")


def _sklearn(x):
    x = np.sort(x).reshape(-1, 1).astype(np.float64)
    gmm = skm.GaussianMixture(2, weights_init=np.array([0.5, 0.5]),
                              means_init=np.array([x.min(), x.max()]).reshape(2, 1),
                              precisions_init=np.ones((2, 1)), covariance_type="diag")
    gmm.fit(x)
    return gmm, gmm.predict(x), gmm.score_samples(x)


def _rows(seed, g=24, k=45):
    """Random loss-like rows: a low cluster and a high cluster, varying sizes and spreads."""
    rng = np.random.default_rng(seed)
    x = np.zeros((g, k))
    mask = np.zeros((g, k), bool)
    for i in range(g):
        n = int(rng.integers(2, k + 1))
        n_lo = int(rng.integers(1, n))
        lo = rng.normal(rng.uniform(0.2, 1.0), rng.uniform(0.05, 0.3), n_lo)
        hi = rng.normal(rng.uniform(1.5, 4.0), rng.uniform(0.1, 0.8), n - n_lo)
        vals = np.sort(np.abs(np.concatenate([lo, hi])))
        x[i, :n], mask[i, :n] = vals, True
    return x, mask


@pytest.mark.parametrize("dtype", [tf.float64, tf.float32])
def test_matches_sklearn_on_random_rows(dtype):
    x, mask = _rows(0)
    params = fit_gmm_1d(tf.constant(x), tf.constant(mask), dtype=dtype)
    comp, score = gmm_predict(params, tf.constant(x))
    tol = 1e-6 if dtype == tf.float64 else 2e-3
    agree, total = 0, 0
    for i in range(x.shape[0]):
        xi = x[i, mask[i]]
        gmm, labels, scores = _sklearn(xi)
        order = np.argsort(xi, kind="stable")
        np.testing.assert_allclose(params.means.numpy()[i], gmm.means_[:, 0], rtol=tol, atol=tol)
        np.testing.assert_allclose(params.variances.numpy()[i], gmm.covariances_[:, 0],
                                   rtol=10 * tol, atol=tol)
        np.testing.assert_allclose(params.weights.numpy()[i], gmm.weights_, rtol=tol, atol=tol)
        np.testing.assert_allclose(score.numpy()[i, mask[i]], scores[np.argsort(order)],
                                   rtol=10 * tol, atol=10 * tol)
        agree += int((comp.numpy()[i, mask[i]] == labels[np.argsort(order)]).sum())
        total += int(mask[i].sum())
        assert bool(params.converged[i]) == gmm.converged_
        if dtype == tf.float64:
            assert int(params.n_iter[i]) == gmm.n_iter_
    assert agree == total


def test_rows_with_fewer_than_two_samples_are_skipped_and_finite():
    x = tf.constant([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.1, 2.0, 0.0]])
    mask = tf.constant([[True, False, False], [True, True, True], [True, True, False]])
    p = fit_gmm_1d(x, mask)
    assert p.converged.numpy().tolist() == [False, True, True]
    assert p.n_iter.numpy()[0] == 0
    for t in (p.weights, p.means, p.variances):
        assert np.isfinite(t.numpy()).all()
    comp, score = gmm_predict(p, x)
    assert comp.numpy()[2].tolist()[:2] == [0, 1]  # low loss -> component 0 (PAA's foreground)


def test_compiles_under_xla():
    x, mask = _rows(1, g=8)
    eager = fit_gmm_1d(tf.constant(x, tf.float32), tf.constant(mask))
    fn = tf.function(lambda a, b: fit_gmm_1d(a, b), jit_compile=True)
    xla = fn(tf.constant(x, tf.float32), tf.constant(mask))
    np.testing.assert_allclose(xla.means.numpy(), eager.means.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(KdetError, match="max_iter"):
        fit_gmm_1d(tf.zeros([1, 3]), max_iter=0)
    with pytest.raises(KdetError, match=r"\[G, K\]"):
        fit_gmm_1d(tf.zeros([3]))
