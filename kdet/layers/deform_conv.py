"""Deformable convolution layers: DCNv1 ``DeformConv2D`` and DCNv2 ``ModulatedDeformConv2D``.

Keras twins of mmcv's ``DeformConv2dPack`` and ``ModulatedDeformConv2dPack``: the layer owns
the convolution ``kernel`` [kh, kw, Cin/groups, filters] (and ``bias`` [filters] when
``use_bias``) and a sub-layer ``conv_offset``, a plain ``keras.layers.Conv2D`` with the same
kernel size, stride, padding and dilation, zero-initialised (weights and bias), that predicts
from the input

* DCNv1: ``2*dg*kh*kw`` channels, the offsets;
* DCNv2: ``3*dg*kh*kw`` channels split in three equal parts ``[o1, o2, mask_logits]`` as mmcv
  does: ``offset = concat(o1, o2)`` (i.e. the first ``2*dg*kh*kw`` channels) and
  ``mask = sigmoid(mask_logits)``.

At initialisation the offsets are 0, so DCNv1 equals a plain convolution and DCNv2 equals
half of it (``sigmoid(0) = 0.5``), as in mmcv. Padding is explicit symmetric zero padding of
``padding`` pixels on each side (PyTorch's ``padding=``), not Keras' "same"/"valid".
MMDetection uses the v2 layer as the 3x3 conv of bottleneck blocks in stages c3-c5
(``dcn=dict(type="DCNv2", deform_groups=1)``, e.g. ``mask_rcnn_regnetx-3.2GF_fpn_mdconv_c3-c5``).
"""
import keras

from kdet.errors import KdetError
from kdet.ops.deform_conv import _pair, deform_conv2d

__all__ = ["DeformConv2D", "ModulatedDeformConv2D"]


def default_kernel_initializer():
    """mmcv's DCN init: U(-1/sqrt(n), 1/sqrt(n)) with n = Cin/groups * kh * kw
    (``DeformConv2d.reset_parameters``); VarianceScaling gives sqrt(3 * scale / fan_in)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


@keras.saving.register_keras_serializable(package="kdet")
class DeformConv2D(keras.layers.Layer):
    """Deformable convolution v1 with its own offset predictor (mmcv ``DeformConv2dPack``).

    Args:
      filters: output channels (divisible by ``groups``).
      kernel_size, strides, padding, dilation: int or (h, w); ``padding`` is symmetric zero
        padding in pixels on each side.
      groups: convolution groups; deform_groups: channel groups sharing one offset field.
      use_bias: add a bias [filters] (mmcv's DCN layers have none in MMDetection's backbones).
      kernel_initializer, bias_initializer: for ``kernel`` / ``bias`` (default: mmcv's).
    Input [B, H, W, Cin] -> output [B, Ho, Wo, filters] with
    Ho = (H + 2*padding - dilation*(kh-1) - 1) // stride + 1.
    """

    modulated = False

    def __init__(self, filters, kernel_size=3, strides=1, padding=1, dilation=1, groups=1,
                 deform_groups=1, use_bias=False, kernel_initializer=None,
                 bias_initializer="zeros", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        # --- arguments
        if not isinstance(filters, int) or filters < 1:
            raise KdetError(f"{type(self).__name__}: filters must be a positive int, "
                            f"got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.strides = _pair(strides, "strides", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        for arg, value in (("groups", groups), ("deform_groups", deform_groups)):
            if not isinstance(value, int) or value < 1:
                raise KdetError(f"{type(self).__name__}: {arg} must be a positive int, "
                                f"got {value!r}")
        if filters % groups:
            raise KdetError(f"{type(self).__name__}: filters ({filters}) must be divisible by "
                            f"groups ({groups})")
        self.groups = groups
        self.deform_groups = deform_groups
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_kernel_initializer())
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # --- offset (and mask) predictor, zero-initialised as in mmcv's init_offset()
        kp = self.kernel_size[0] * self.kernel_size[1]
        # Keras' Conv2D refuses strides > 1 together with dilation > 1; a stride-1 conv
        # subsampled every `stride` pixels is the same function with the same weights.
        self._subsample = max(self.strides) > 1 and max(self.dilation) > 1
        self.conv_offset = keras.layers.Conv2D(
            filters=(3 if self.modulated else 2) * deform_groups * kp,
            kernel_size=self.kernel_size, strides=1 if self._subsample else self.strides,
            padding="valid", dilation_rate=self.dilation, use_bias=True,
            kernel_initializer="zeros", bias_initializer="zeros", name="conv_offset",
            dtype=self.dtype_policy)

    def build(self, input_shape):
        cin = input_shape[-1]
        if cin is None:
            raise KdetError(f"{type(self).__name__}: the input channel count must be known")
        if cin % self.groups:
            raise KdetError(f"{type(self).__name__}: input channels ({cin}) must be divisible "
                            f"by groups ({self.groups})")
        if cin % self.deform_groups:
            raise KdetError(f"{type(self).__name__}: input channels ({cin}) must be divisible "
                            f"by deform_groups ({self.deform_groups})")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, cin // self.groups, self.filters),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer=self.bias_initializer) if self.use_bias else None
        padded = list(input_shape)
        for axis in (1, 2):
            if padded[axis] is not None:
                padded[axis] += 2 * self.padding[axis - 1]
        self.conv_offset.build(tuple(padded))

    def _offset_and_mask(self, inputs):
        ph, pw = self.padding
        x = keras.ops.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]]) if ph or pw else inputs
        out = self.conv_offset(x)
        if self._subsample:
            out = out[:, ::self.strides[0], ::self.strides[1], :]
        n = 2 * self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[..., :n], keras.ops.sigmoid(out[..., n:])

    def call(self, inputs):
        offset, mask = self._offset_and_mask(inputs)
        dtype = inputs.dtype
        bias = None if self.bias is None else keras.ops.cast(self.bias, dtype)
        return deform_conv2d(
            inputs, keras.ops.cast(offset, dtype), keras.ops.cast(self.kernel, dtype), bias,
            None if mask is None else keras.ops.cast(mask, dtype), strides=self.strides,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            deform_groups=self.deform_groups)

    def compute_output_shape(self, input_shape):
        out = [input_shape[0]]
        for i in range(2):
            size = input_shape[1 + i]
            out.append(None if size is None else
                       (size + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1)
                        - 1) // self.strides[i] + 1)
        return (*out, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            deform_groups=self.deform_groups, use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer))
        return config


@keras.saving.register_keras_serializable(package="kdet")
class ModulatedDeformConv2D(DeformConv2D):
    """Modulated deformable convolution, DCNv2 (mmcv ``ModulatedDeformConv2dPack``).

    Same arguments and shapes as `DeformConv2D`; ``conv_offset`` predicts ``3*dg*kh*kw``
    channels ``[o1, o2, mask_logits]``: offset = concat(o1, o2), mask = sigmoid(mask_logits).
    """

    modulated = True
