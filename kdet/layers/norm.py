"""Normalisation layers and the ``norm_cfg`` factory (MMDetection's ``build_norm_layer``).

``norm_cfg`` is a dict: ``{"type": "BN" | "SyncBN" | "GN", "requires_grad": True,
"num_groups": 32 (GN), "eps": 1e-5, "momentum": 0.1}``. ``momentum`` uses PyTorch's meaning
(weight of the new batch statistic); Keras' is ``1 - momentum``.
"""
import keras

from kdet.errors import KdetError

_NORM_TYPES = ("BN", "SyncBN", "GN")


@keras.saving.register_keras_serializable(package="kdet")
class FrozenStatsBatchNorm(keras.layers.BatchNormalization):
    """BatchNorm that always normalises with its moving statistics (MMDetection ``norm_eval``).

    The moving mean/variance never update; gamma/beta stay trainable unless the layer (or
    ``requires_grad=False``) says otherwise. Input/output: any shape, channels last.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def check_norm_cfg(norm_cfg):
    """Validate and fill defaults of a norm config dict."""
    cfg = {"type": "BN", "requires_grad": True, "eps": 1e-5, "momentum": 0.1}
    cfg.update(dict(norm_cfg or {}))
    if cfg["type"] not in _NORM_TYPES:
        raise KdetError(f"norm_cfg type must be one of {_NORM_TYPES}, got {cfg['type']!r}")
    unknown = set(cfg) - {"type", "requires_grad", "eps", "momentum", "num_groups"}
    if unknown:
        raise KdetError(f"norm_cfg has unknown keys {sorted(unknown)}")
    if cfg["type"] == "GN":
        cfg.setdefault("num_groups", 32)
    return cfg


def build_norm(norm_cfg, name, norm_eval=False, zero_init=False):
    """A Keras normalisation layer for ``norm_cfg`` over the last axis.

    norm_eval: BN statistics frozen (always inference-mode normalisation).
    zero_init: gamma starts at 0 (zero-init residual, as pycls' ZERO_INIT_FINAL_GAMMA).
    """
    cfg = check_norm_cfg(norm_cfg)
    gamma_init = "zeros" if zero_init else "ones"
    if cfg["type"] == "GN":
        layer = keras.layers.GroupNormalization(
            groups=cfg["num_groups"], epsilon=cfg["eps"], gamma_initializer=gamma_init, name=name)
    else:
        cls = FrozenStatsBatchNorm if norm_eval else keras.layers.BatchNormalization
        layer = cls(momentum=1.0 - cfg["momentum"], epsilon=cfg["eps"],
                    synchronized=cfg["type"] == "SyncBN", gamma_initializer=gamma_init, name=name)
    if not cfg["requires_grad"]:
        layer.trainable = False
    return layer
