"""Two-component 1-D Gaussian mixture fitted by EM in TensorFlow, batched over rows with
static shapes -- the GMM that PAA (Kim & Lee, ECCV 2020, arXiv:2007.08103) fits to the
losses of every ground truth's candidate anchors. MMDetection's ``PAAHead.paa_reassign``
copies the losses to the host and calls ``sklearn.mixture.GaussianMixture``; kdet runs the
same algorithm in graph (XLA-compilable, one ``tf.while_loop`` for all ground truths).

Semantics follow scikit-learn's ``GaussianMixture(n_components=2, covariance_type='diag',
weights_init, means_init, precisions_init, tol=1e-3, reg_covar=1e-6, max_iter=100)``
(sklearn/mixture/_base.py ``fit_predict``, _gaussian_mixture.py):

* initial parameters are exactly the given ``weights_init``, ``means_init`` and
  ``precisions_init`` (variance = 1 / precision);
* each iteration: E-step with the current parameters (its mean log-likelihood is the
  iteration's lower bound), then M-step ``nk = sum resp + 10 eps``, ``mean = sum resp x / nk``,
  ``var = sum resp (x - mean)^2 / nk + reg_covar`` (sklearn's ``sum resp x^2 / nk - mean^2``,
  computed without cancellation), ``weight = nk / n``;
* a row stops (keeping the parameters of its last M-step) once the lower bound changes by
  less than ``tol``; ``predict`` is the argmax component of the weighted log density (first
  on ties) and ``score_samples`` its logsumexp.

In one dimension 'diag', 'full' and 'spherical' covariances are the same model.
Rows are independent; samples are masked, so every row may use a different number of them.
"""
import math
from typing import NamedTuple

import tensorflow as tf

from kdet.errors import KdetError


class GMMParams(NamedTuple):
    """Fitted mixture, per row: ``weights``, ``means``, ``variances`` [G, 2];
    ``converged`` [G] bool; ``n_iter`` [G] int32 (EM iterations run)."""
    weights: tf.Tensor
    means: tf.Tensor
    variances: tf.Tensor
    converged: tf.Tensor
    n_iter: tf.Tensor


def _weighted_log_prob(x, weights, means, variances):
    """log(w_k) + log N(x | mu_k, var_k): x [G, K] -> [G, K, 2]."""
    x = x[..., None]
    means, variances, weights = means[:, None, :], variances[:, None, :], weights[:, None, :]
    log_prob = -0.5 * (math.log(2.0 * math.pi) + tf.math.log(variances)
                       + tf.square(x - means) / variances)
    return log_prob + tf.math.log(weights)


def fit_gmm_1d(x, mask=None, means_init=None, weights_init=(0.5, 0.5), precisions_init=(1.0, 1.0),
               max_iter=100, tol=1e-3, reg_covar=1e-6, dtype=tf.float32):
    """Fits one two-component 1-D GMM per row by EM.

    Args:
        x: [G, K] samples (row g holds the samples of mixture g).
        mask: [G, K] bool, which samples are real (default all). Rows with fewer than 2
            samples are not fitted (``converged`` False, ``n_iter`` 0).
        means_init: [G, 2] initial means; default (min, max) of each row's samples (PAA's).
        weights_init, precisions_init: initial weights and precisions (1 / variance), two
            values shared by all rows or [G, 2] (PAA: 0.5, 0.5 and 1, 1).
        max_iter, tol, reg_covar: scikit-learn's defaults (100, 1e-3, 1e-6).
        dtype: computation dtype (float32, or float64 where available, for sklearn parity).
    Returns:
        :class:`GMMParams` (float tensors in ``dtype``).
    """
    if int(max_iter) < 1:
        raise KdetError(f"max_iter must be >= 1, got {max_iter}")
    if tol < 0 or reg_covar < 0:
        raise KdetError(f"tol and reg_covar must be >= 0, got {tol} and {reg_covar}")
    x = tf.cast(x, dtype)
    if x.shape.rank != 2:
        raise KdetError(f"fit_gmm_1d expects samples [G, K], got shape {x.shape}")
    mask = tf.ones_like(x, tf.bool) if mask is None else tf.cast(mask, tf.bool)
    m = tf.cast(mask, dtype)
    x = tf.where(mask, x, tf.zeros_like(x))  # keeps masked entries finite
    n = tf.reduce_sum(m, axis=1)  # [G]
    fit_row = n >= 2.0
    if means_init is None:
        big = tf.constant(3.0e38 if dtype == tf.float32 else 1.0e300, dtype)
        lo = tf.reduce_min(tf.where(mask, x, big), axis=1)
        hi = tf.reduce_max(tf.where(mask, x, -big), axis=1)
        means_init = tf.stack([tf.where(fit_row, lo, 0.0), tf.where(fit_row, hi, 0.0)], axis=1)
    g = tf.shape(x)[0]

    def per_row(v):
        v = tf.cast(v, dtype)
        return tf.broadcast_to(v, tf.stack([g, 2])) if v.shape.rank == 1 else v

    weights, means = per_row(weights_init), per_row(means_init)
    variances = 1.0 / per_row(precisions_init)
    eps10 = 10.0 * _finfo_eps(dtype)
    n_safe = tf.maximum(n, 1.0)[:, None]

    def body(i, weights, means, variances, lower, active, n_iter):
        # E-step with the current parameters.
        wlp = _weighted_log_prob(x, weights, means, variances)  # [G, K, 2]
        log_norm = tf.reduce_logsumexp(wlp, axis=-1)  # [G, K]
        resp = tf.exp(wlp - log_norm[..., None]) * m[..., None]
        new_lower = tf.reduce_sum(log_norm * m, axis=1) / n_safe[:, 0]
        # M-step.
        nk = tf.reduce_sum(resp, axis=1) + eps10  # [G, 2]
        new_means = tf.reduce_sum(resp * x[..., None], axis=1) / nk
        # sklearn: avg(x^2) - mean^2 + reg_covar; the centred form below is the same number
        # without float32's cancellation (a one-sample component has variance reg_covar).
        centred = tf.square(x[..., None] - new_means[:, None, :])
        new_var = tf.reduce_sum(resp * centred, axis=1) / nk + reg_covar
        new_weights = nk / tf.reduce_sum(nk, axis=1, keepdims=True)
        upd = active[:, None]
        weights = tf.where(upd, new_weights, weights)
        means = tf.where(upd, new_means, means)
        variances = tf.where(upd, new_var, variances)
        done = tf.abs(new_lower - lower) < tol
        n_iter = n_iter + tf.cast(active, tf.int32)
        lower = tf.where(active, new_lower, lower)
        active = active & ~done
        return i + 1, weights, means, variances, lower, active, n_iter

    def cond(i, weights, means, variances, lower, active, n_iter):
        return (i < int(max_iter)) & tf.reduce_any(active)

    lower0 = tf.fill(tf.stack([g]), tf.constant(-float("inf"), dtype))
    state = (tf.constant(0), weights, means, variances, lower0, fit_row,
             tf.zeros(tf.stack([g]), tf.int32))
    _, weights, means, variances, _, active, n_iter = tf.while_loop(cond, body, state)
    return GMMParams(weights, means, variances, fit_row & ~active, n_iter)


def _finfo_eps(dtype):
    # np.finfo(dtype).eps: sklearn adds 10 * eps of resp's dtype to nk.
    return 2.0 ** -52 if dtype == tf.float64 else 2.0 ** -23


def gmm_predict(params, x):
    """(component [G, K] int32 -- argmax, first on ties -- and ``score_samples`` [G, K], the
    log density of the mixture) for samples ``x`` [G, K] under ``params``."""
    x = tf.cast(x, params.means.dtype)
    wlp = _weighted_log_prob(x, params.weights, params.means, params.variances)
    return tf.argmax(wlp, axis=-1, output_type=tf.int32), tf.reduce_logsumexp(wlp, axis=-1)
