"""Feature Pyramid Network (Lin et al., CVPR 2017, arXiv:1612.03144) as a Keras
layer with MMDetection v2's ``FPN`` semantics.

Layer names mirror the mmdet module tree so checkpoint keys map one to one:

    mmdet key                                kdet weight (NHWC)
    neck.lateral_convs.{i}.conv.weight  ->   <fpn>/lateral_convs.{i}.conv/kernel
                                             (torch [O, I, kh, kw] -> [kh, kw, I, O])
    neck.lateral_convs.{i}.conv.bias    ->   <fpn>/lateral_convs.{i}.conv/bias
    neck.fpn_convs.{j}.conv.weight/bias ->   <fpn>/fpn_convs.{j}.conv/kernel, bias

``i`` counts used backbone levels from ``start_level``; ``j`` counts the 3x3
output convs, then the stride-2 extra convs (when ``add_extra_convs``).
:meth:`FPN.mmdet_key_map` lists the pairs; :meth:`FPN.torch_state_map` gives the variables
(mmcv ``ConvModule`` without norm: ``.conv.weight`` + ``.conv.bias``).
"""
import keras
import tensorflow as tf

from kdet.errors import KdetError

_EXTRA_MODES = ("on_input", "on_lateral", "on_output")


def _upsample_nearest_to(x, size):
    """Nearest resize of NHWC ``x`` to ``size`` (h, w), PyTorch's legacy
    ``F.interpolate(mode='nearest', size=...)``: source index floor(i * in / out).
    Built from gathers, so it compiles under XLA for any sizes."""
    in_h, in_w = tf.shape(x)[1], tf.shape(x)[2]
    out_h, out_w = size
    ys = (tf.range(out_h) * in_h) // out_h
    xs = (tf.range(out_w) * in_w) // out_w
    return tf.gather(tf.gather(x, ys, axis=1), xs, axis=2)


@keras.saving.register_keras_serializable(package="kdet")
class FPN(keras.layers.Layer):
    """FPN neck: list of NHWC backbone maps -> list of ``num_outs`` NHWC maps.

    Args:
        in_channels: channels of each backbone output, e.g. RegNetX-3.2GF
            [96, 192, 432, 1008], ResNet-50 [256, 512, 1024, 2048].
        out_channels: channels of every output (mmdet: 256).
        num_outs: number of outputs (5 for Faster/Mask R-CNN and RetinaNet).
        start_level: first backbone level used (RetinaNet: 1, i.e. C3).
        end_level: last backbone level used (inclusive); -1 = the last one. With
            an explicit end level no extra levels are allowed.
        add_extra_convs: False: extra levels by max-pool (kernel 1, stride 2) of
            the last output (Faster/Mask R-CNN, P6). True / "on_input": the first
            extra level is a stride-2 3x3 conv on the last used backbone map
            (RetinaNet P6 from C5), "on_lateral" on the last lateral,
            "on_output" on the last output; later extra levels convolve the
            previous extra output.
        relu_before_extra_convs: ReLU before the 2nd+ extra convs (RetinaNet: False;
            FCOS/ATSS-style configs: True).
        upsample: top-down upsampling mode; "nearest" (to the lateral's size).
    Call:
        inputs: list of len(in_channels) NHWC tensors, strides increasing by 2.
    Returns:
        list of ``num_outs`` NHWC tensors with ``out_channels`` channels.
    """

    def __init__(self, in_channels, out_channels=256, num_outs=5, start_level=0, end_level=-1,
                 add_extra_convs=False, relu_before_extra_convs=False, upsample="nearest",
                 **kwargs):
        super().__init__(**kwargs)
        # -- arguments (mmdet's FPN.__init__ checks)
        in_channels = [int(c) for c in in_channels]
        num_ins = len(in_channels)
        if num_ins == 0:
            raise KdetError("FPN needs at least one input level (in_channels is empty)")
        if not 0 <= start_level < num_ins:
            raise KdetError(f"start_level {start_level} out of range for {num_ins} inputs")
        if end_level == -1 or end_level == num_ins - 1:
            backbone_end_level = num_ins
            if num_outs < num_ins - start_level:
                raise KdetError(f"num_outs={num_outs} is fewer than the {num_ins - start_level} "
                                f"used input levels")
        else:
            if not start_level <= end_level < num_ins:
                raise KdetError(f"end_level {end_level} out of range [{start_level}, {num_ins})")
            backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise KdetError("with an explicit end_level, num_outs must equal "
                                f"end_level - start_level + 1 = {end_level - start_level + 1}")
        if isinstance(add_extra_convs, str):
            if add_extra_convs not in _EXTRA_MODES:
                raise KdetError(f"add_extra_convs must be False/True or one of {_EXTRA_MODES}, "
                                f"got {add_extra_convs!r}")
        elif add_extra_convs:
            add_extra_convs = "on_input"  # mmdet: True means 'on_input'
        else:
            add_extra_convs = False
        if upsample != "nearest":
            raise KdetError(f"FPN upsample mode {upsample!r} is not supported; use 'nearest'")
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.num_outs = int(num_outs)
        self.start_level = int(start_level)
        self.end_level = int(end_level)
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = bool(relu_before_extra_convs)
        self.upsample = upsample
        self._backbone_end_level = backbone_end_level
        self._used_levels = backbone_end_level - self.start_level

        # -- layers: mmdet inits FPN convs xavier-uniform (gain 1), bias 0.
        def conv(name, kernel, strides=1):
            return keras.layers.Conv2D(
                self.out_channels, kernel, strides=strides,
                padding="same" if strides == 1 else "valid",
                kernel_initializer="glorot_uniform", bias_initializer="zeros",
                dtype=self.dtype_policy, name=name)

        self.lateral_convs = [conv(f"lateral_convs.{i}.conv", 1) for i in range(self._used_levels)]
        self.fpn_convs = [conv(f"fpn_convs.{i}.conv", 3) for i in range(self._used_levels)]
        extra_levels = self.num_outs - self._used_levels
        self._num_extra_convs = extra_levels if (add_extra_convs and extra_levels > 0) else 0
        for j in range(self._num_extra_convs):
            self.fpn_convs.append(conv(f"fpn_convs.{self._used_levels + j}.conv", 3, strides=2))
        # torch pads a stride-2 3x3 conv by 1 on every side; TF "same" would pad
        # only bottom/right for even sizes, so pad explicitly.
        self._pad = keras.layers.ZeroPadding2D(1, dtype=self.dtype_policy, name="extra_pad")

    def build(self, input_shape):
        if len(input_shape) != len(self.in_channels):
            raise KdetError(f"FPN got {len(input_shape)} inputs, expected {len(self.in_channels)}")
        for i, (shape, ch) in enumerate(zip(input_shape, self.in_channels)):
            if shape[-1] is not None and shape[-1] != ch:
                raise KdetError(f"FPN input {i} has {shape[-1]} channels, expected {ch}")
        for i, layer in enumerate(self.lateral_convs):
            layer.build(input_shape[i + self.start_level])
        out_shape = (None, None, None, self.out_channels)
        for layer in self.fpn_convs[:self._used_levels]:
            layer.build(out_shape)
        for j in range(self._num_extra_convs):
            if j == 0 and self.add_extra_convs == "on_input":
                ch = self.in_channels[self._backbone_end_level - 1]
            else:
                ch = self.out_channels
            self.fpn_convs[self._used_levels + j].build((None, None, None, ch))
        self.built = True

    def call(self, inputs):
        if len(inputs) != len(self.in_channels):
            raise KdetError(f"FPN got {len(inputs)} inputs, expected {len(self.in_channels)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(self._used_levels - 1, 0, -1):  # top-down pathway
            size = (tf.shape(laterals[i - 1])[1], tf.shape(laterals[i - 1])[2])
            laterals[i - 1] = laterals[i - 1] + _upsample_nearest_to(laterals[i], size)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(self._used_levels)]
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                for _ in range(self.num_outs - self._used_levels):
                    outs.append(outs[-1][:, ::2, ::2, :])  # max_pool2d(kernel 1, stride 2)
            else:
                if self.add_extra_convs == "on_input":
                    source = inputs[self._backbone_end_level - 1]
                elif self.add_extra_convs == "on_lateral":
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[self._used_levels](self._pad(source)))
                for i in range(self._used_levels + 1, self.num_outs):
                    x = outs[-1]
                    if self.relu_before_extra_convs:
                        x = tf.nn.relu(x)
                    outs.append(self.fpn_convs[i](self._pad(x)))
        return outs

    def compute_output_shape(self, input_shape):
        shapes = []
        for i in range(self._used_levels):
            s = input_shape[i + self.start_level]
            shapes.append((s[0], s[1], s[2], self.out_channels))
        while len(shapes) < self.num_outs:
            b, h, w, _ = shapes[-1]
            half = lambda v: None if v is None else (v + 1) // 2  # noqa: E731
            shapes.append((b, half(h), half(w), self.out_channels))
        return shapes

    def output_strides(self, input_strides):
        """Stride of every output given the backbone inputs' strides (e.g. [4, 8, 16, 32])."""
        strides = list(input_strides[self.start_level:self._backbone_end_level])
        while len(strides) < self.num_outs:
            strides.append(strides[-1] * 2)
        return strides

    def mmdet_key_map(self, prefix="neck"):
        """{mmdet state-dict key: kdet layer name + '/kernel' | '/bias'} for this FPN."""
        out = {}
        for group, layers in (("lateral_convs", self.lateral_convs), ("fpn_convs", self.fpn_convs)):
            for i, layer in enumerate(layers):
                out[f"{prefix}.{group}.{i}.conv.weight"] = f"{layer.name}/kernel"
                out[f"{prefix}.{group}.{i}.conv.bias"] = f"{layer.name}/bias"
        return out

    def torch_state_map(self, prefix="neck"):
        """{mmdet state-dict key: Keras variable} (generic conv layout) for checkpoint loading."""
        out = {}
        for group, layers in (("lateral_convs", self.lateral_convs), ("fpn_convs", self.fpn_convs)):
            for i, layer in enumerate(layers):
                out[f"{prefix}.{group}.{i}.conv.weight"] = layer.kernel
                out[f"{prefix}.{group}.{i}.conv.bias"] = layer.bias
        return out

    def get_config(self):
        config = super().get_config()
        config.update({
            "in_channels": list(self.in_channels), "out_channels": self.out_channels,
            "num_outs": self.num_outs, "start_level": self.start_level,
            "end_level": self.end_level, "add_extra_convs": self.add_extra_convs,
            "relu_before_extra_convs": self.relu_before_extra_convs, "upsample": self.upsample,
        })
        return config
