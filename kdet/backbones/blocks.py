"""Functional building blocks shared by the ResNet-style backbones (ResNet, ResNeXt, RegNet).

Layer names follow MMDetection's ResNet state-dict keys (``conv1``, ``bn1``,
``layer2.0.conv2``, ``layer2.0.downsample.0`` ...), so a PyTorch key maps to a Keras layer by
name (see ``kdet.backbones.base.torch_state_map``). Padding is explicit and symmetric, as in
PyTorch, so outputs match PyTorch on odd and even input sizes alike.
"""
import keras

from kdet.errors import KdetError
from kdet.layers.group_conv import GroupConv2D
from kdet.layers.norm import build_norm

# PyTorch's default conv init is replaced by MMDetection's kaiming_init(mode="fan_out") for
# ResNet-style backbones; Keras' he_normal(fan_in) differs only in scale, which pretrained
# weights overwrite anyway. We use fan_out to match MMDetection's from-scratch init.
CONV_INIT = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def conv(x, filters, kernel_size, name, strides=1, padding=0, dilation=1, groups=1,
         use_bias=False, trainable=True):
    """PyTorch-style Conv2d: explicit symmetric zero ``padding`` then a 'valid' convolution."""
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}.pad")(x)
    # Grouped convs (RegNet, ResNeXt): GroupConv2D has fast CPU gradients (layers/group_conv.py).
    conv_cls = GroupConv2D if groups > 1 else keras.layers.Conv2D
    layer = conv_cls(
        filters, kernel_size, strides=strides, padding="valid", dilation_rate=dilation,
        groups=groups, use_bias=use_bias, kernel_initializer=CONV_INIT, name=name)
    layer.trainable = trainable
    return layer(x)


def dcn_conv(x, filters, name, dcn, strides=1, padding=1, dilation=1, groups=1, trainable=True):
    """3x3 deformable conv (``dcn=dict(type="DCN"|"DCNv2", deform_groups=1)``) in a block."""
    from kdet import layers as klayers  # deformable layers live in kdet.layers.deform_conv
    kind = dcn.get("type", "DCNv2")
    cls_name = {"DCN": "DeformConv2D", "DCNv2": "ModulatedDeformConv2D"}.get(kind)
    if cls_name is None:
        raise KdetError(f"dcn type must be 'DCN' or 'DCNv2', got {kind!r}")
    cls = getattr(klayers, cls_name, None)
    if cls is None:
        raise KdetError(f"kdet.layers.{cls_name} is not available in this build")
    layer = cls(filters, kernel_size=3, strides=strides, padding=padding, dilation=dilation,
                groups=groups, deform_groups=int(dcn.get("deform_groups", 1)), use_bias=False,
                name=name)
    layer.trainable = trainable
    return layer(x)


def norm(x, norm_cfg, name, norm_eval, trainable=True, zero_init=False):
    layer = build_norm(norm_cfg, name, norm_eval=norm_eval, zero_init=zero_init)
    if not trainable:
        layer.trainable = False
    return layer(x)


def relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def squeeze_excite(x, in_width, se_channels, name, trainable=True):
    """pycls SE: global average pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = conv(s, se_channels, 1, f"{name}.fc1", use_bias=True, trainable=trainable)
    s = relu(s, f"{name}.relu")
    s = conv(s, in_width, 1, f"{name}.fc2", use_bias=True, trainable=trainable)
    s = keras.layers.Activation("sigmoid", name=f"{name}.sigmoid")(s)
    return keras.layers.Multiply(name=f"{name}.scale")([x, s])


def bottleneck(x, in_channels, out_channels, mid_channels, stride, name, *, groups=1,
               dilation=1, style="pytorch", se_channels=0, dcn=None, norm_cfg=None,
               norm_eval=False, trainable=True, zero_init_residual=False):
    """One ResNet bottleneck: 1x1 -> 3x3 (grouped, optional DCN/SE) -> 1x1, plus shortcut.

    x: [B, H, W, in_channels] -> [B, ceil(H/stride), ceil(W/stride), out_channels].
    style "pytorch" puts the stride on the 3x3 conv, "caffe" on the first 1x1 conv.
    """
    s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
    kw = dict(norm_cfg=norm_cfg, norm_eval=norm_eval, trainable=trainable)
    identity = x
    out = conv(x, mid_channels, 1, f"{name}.conv1", strides=s1, trainable=trainable)
    out = relu(norm(out, name=f"{name}.bn1", **kw), f"{name}.relu1")
    if dcn is not None:
        out = dcn_conv(out, mid_channels, f"{name}.conv2", dcn, strides=s2, padding=dilation,
                       dilation=dilation, groups=groups, trainable=trainable)
    else:
        out = conv(out, mid_channels, 3, f"{name}.conv2", strides=s2, padding=dilation,
                   dilation=dilation, groups=groups, trainable=trainable)
    out = relu(norm(out, name=f"{name}.bn2", **kw), f"{name}.relu2")
    if se_channels:
        out = squeeze_excite(out, mid_channels, se_channels, f"{name}.se", trainable=trainable)
    out = conv(out, out_channels, 1, f"{name}.conv3", trainable=trainable)
    out = norm(out, name=f"{name}.bn3", zero_init=zero_init_residual, **kw)
    if stride != 1 or in_channels != out_channels:
        identity = conv(x, out_channels, 1, f"{name}.downsample.0", strides=stride,
                        trainable=trainable)
        identity = norm(identity, name=f"{name}.downsample.1", **kw)
    out = keras.layers.Add(name=f"{name}.add")([out, identity])
    return relu(out, f"{name}.relu")
