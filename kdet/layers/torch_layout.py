"""PyTorch names and layouts of weights, for the backbones' and heads' ``torch_state_map``.

A ``torch_state_map`` is ``{PyTorch key: Keras variable or TorchParam}``. A plain variable takes
the generic layout of ``kdet.convert.loader``: conv weight ``[O, I, kh, kw]`` <-> kernel
``[kh, kw, I, O]``, linear ``[O, I]`` <-> ``[I, O]``, everything else as is. A weight whose
PyTorch layout is not the generic one is a :class:`TorchParam` carrying its own PyTorch shape
and both transforms (numpy only; nothing here imports torch).
"""
import re
from typing import Callable, NamedTuple

import numpy as np

from kdet.errors import KdetError

# Keras variable name -> PyTorch parameter name (mmcv ``Scale`` keeps ``scale``).
_TORCH_PARAM = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var",
                "scale": "scale"}


class TorchParam(NamedTuple):
    """A variable with a non-generic PyTorch layout.

    variable: the Keras variable. torch_shape: the PyTorch tensor shape it loads from.
    to_keras: PyTorch-layout array -> value for ``variable``. from_keras: the inverse.
    """
    variable: object
    torch_shape: tuple
    to_keras: Callable
    from_keras: Callable


def torch_key(var, key):
    """PyTorch key of Keras variable ``var`` of the layer whose PyTorch module path is ``key``:
    kernel / gamma -> ``key.weight``, bias / beta -> ``key.bias``, moving_mean ->
    ``key.running_mean``, moving_variance -> ``key.running_var``, scale -> ``key.scale``."""
    name = re.split(r"[/:]", var.path)[-1] if var.path else var.name
    if name not in _TORCH_PARAM:
        raise KdetError(f"no PyTorch name for variable {var.path!r} of layer {key!r}")
    return f"{key}.{_TORCH_PARAM[name]}"


def layer_params(layer, key):
    """``{key.weight: kernel|gamma, key.bias: bias|beta, key.running_mean ...}`` for the
    variables of one built Keras layer (conv, dense, norm, Scale)."""
    return {torch_key(var, key): var for var in layer.weights}


def chw_flattened_linear(variable, channels, height, width):
    """The first FC after flattening a ``[C, H, W]`` PyTorch map (mmdet's ``x.flatten(1)`` on
    NCHW RoI features) when kdet flattens the same map as NHWC, i.e. in (H, W, C) order.

    PyTorch weight ``[O, C*H*W]`` (input index ``c*H*W + h*W + w``) <-> Keras kernel
    ``[H*W*C, O]`` (input index ``(h*W + w)*C + c``): a plain transpose would silently mix
    channels and positions, so the input axis is unflattened, permuted and flattened again.
    """
    c, h, w = int(channels), int(height), int(width)
    out = int(variable.shape[-1])
    if int(variable.shape[0]) != c * h * w:
        raise KdetError(f"{variable.path}: kernel {tuple(variable.shape)} is not [{h}*{w}*{c}, O]")

    def to_keras(value):  # [O, C*H*W] -> [O, C, H, W] -> [H, W, C, O] -> [H*W*C, O]
        return np.transpose(np.reshape(value, (out, c, h, w)), (2, 3, 1, 0)).reshape(-1, out)

    def from_keras(value):  # [H*W*C, O] -> [H, W, C, O] -> [O, C, H, W] -> [O, C*H*W]
        v = np.reshape(np.asarray(value), (h, w, c, out))
        return np.transpose(v, (3, 2, 0, 1)).reshape(out, -1)

    return TorchParam(variable, (out, c * h * w), to_keras, from_keras)


def conv_transpose(variable):
    """``nn.ConvTranspose2d`` weight ``[I, O, kh, kw]`` <-> Keras ``Conv2DTranspose`` kernel
    ``[kh, kw, O, I]`` (both frameworks store the transposed conv's *output* channels second
    from the input side; no spatial flip: both compute the gradient of a cross-correlation)."""
    kh, kw, o, i = (int(d) for d in variable.shape)
    return TorchParam(variable, (i, o, kh, kw),
                      lambda v: np.transpose(v, (2, 3, 1, 0)),   # [I, O, kh, kw] -> [kh, kw, O, I]
                      lambda v: np.transpose(np.asarray(v), (3, 2, 0, 1)))
