"""Common base of kdet's backbones: a functional ``keras.Model`` returning multi-scale maps.

Every backbone maps images ``[B, H, W, in_channels]`` (float, normalised) to a list of
feature maps, one per ``out_indices`` entry, and exposes ``out_channels`` and ``out_strides``
(Detectron2's ``output_shape()``) for the necks.
"""

import keras

from kdet.errors import KdetError
from kdet.layers.torch_layout import torch_key


def check_out_indices(out_indices, num_stages):
    out_indices = tuple(int(i) for i in out_indices)
    if not out_indices or any(i < 0 or i >= num_stages for i in out_indices):
        raise KdetError(f"out_indices must be a non-empty subset of 0..{num_stages - 1}, "
                        f"got {out_indices}")
    if list(out_indices) != sorted(set(out_indices)):
        raise KdetError(f"out_indices must be increasing and unique, got {out_indices}")
    return out_indices


def check_stage_flags(values, num_stages, what):
    values = tuple(values)
    if len(values) != num_stages:
        raise KdetError(f"{what} needs {num_stages} entries (one per stage), got {len(values)}")
    return values


@keras.saving.register_keras_serializable(package="kdet")
class InputCheck(keras.layers.Layer):
    """Identity that rejects images of the wrong rank or channel count with a clear error."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, x):
        return x

    def compute_output_spec(self, x):
        self._check(x.shape)
        return keras.KerasTensor(x.shape, x.dtype)

    def build(self, input_shape):
        self._check(input_shape)
        super().build(input_shape)

    def _check(self, shape):
        if len(shape) != 4:
            raise KdetError(f"backbone expects images [B, H, W, {self.channels}] (NHWC), "
                            f"got rank {len(shape)} shape {tuple(shape)}")
        if shape[-1] is not None and shape[-1] != self.channels:
            raise KdetError(f"backbone expects {self.channels} input channels (NHWC), got "
                            f"{shape[-1]} in shape {tuple(shape)}")

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


class Backbone(keras.Model):
    """Functional backbone base: subclasses build ``inputs -> [maps]`` and call ``_finish``."""

    def _finish(self, inputs, outputs, out_channels, out_strides, name, kwargs):
        super().__init__(inputs=inputs, outputs=list(outputs), name=name, **kwargs)
        self.out_channels = list(out_channels)
        self.out_strides = list(out_strides)

    def __call__(self, inputs, *args, **kwargs):
        shape = getattr(inputs, "shape", None)
        if shape is not None:
            self.get_layer("input_check")._check(tuple(shape))
        out = super().__call__(inputs, *args, **kwargs)
        return out if isinstance(out, (list, tuple)) else [out]  # always a list of maps

    def output_shape_info(self):
        """[(channels, stride)] per output, e.g. RegNetX-3.2GF -> [(96, 4), (192, 8), ...]."""
        return list(zip(self.out_channels, self.out_strides))

    def torch_state_map(self, prefix=""):
        """{PyTorch key: Keras variable} in MMDetection's ResNet-style naming.

        Layer names already are the PyTorch module paths (``layer1.0.conv1``); variables map
        kernel->weight, gamma->weight, beta->bias, moving_mean->running_mean,
        moving_variance->running_var. Sub-layers of composite layers (a DCN layer's
        ``conv_offset``) become dotted sub-paths.
        """
        return torch_state_map(self, prefix)


def torch_state_map(model, prefix=""):
    """{torch key: variable} for every variable of ``model`` (see Backbone.torch_state_map)."""
    out = {}
    for layer in model._flatten_layers(include_self=False, recursive=False):
        _collect(layer, prefix + layer.name, out)
    return out


def _collect(layer, key, out):
    own = {id(v) for sub in layer._flatten_layers(include_self=False, recursive=True)
           for v in sub.weights}
    for var in layer.weights:
        if id(var) in own:
            continue
        out[torch_key(var, key)] = var
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        _collect(sub, f"{key}.{sub.name}", out)
