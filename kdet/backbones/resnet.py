"""ResNet (depth 50/101/152) and ResNeXt as in MMDetection's ``ResNet`` / ``ResNeXt``.

style ``pytorch``: stride on the 3x3 conv (torchvision, MMDetection default);
style ``caffe``: stride on the first 1x1 conv (Detectron / MSRA weights).
ResNeXt: ``groups`` x ``base_width`` bottlenecks, e.g. 101-32x4d (groups=32, base_width=4).

    >>> m = ResNet(depth=50)
    >>> [tuple(o.shape) for o in m(keras.ops.zeros((1, 224, 224, 3)))]
    [(1, 56, 56, 256), (1, 28, 28, 512), (1, 14, 14, 1024), (1, 7, 7, 2048)]
"""
import keras

from kdet.backbones import blocks
from kdet.backbones.base import Backbone, InputCheck, check_out_indices, check_stage_flags
from kdet.errors import KdetError
from kdet.layers.norm import check_norm_cfg

STAGE_BLOCKS = {18: None, 34: None, 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@keras.saving.register_keras_serializable(package="kdet")
class ResNet(Backbone):
    """ResNet-style bottleneck backbone -> [C2, C3, C4, C5] maps at strides 4, 8, 16, 32.

    Args:
        depth: 50, 101 or 152.
        groups, base_width: ResNeXt cardinality and width per group (1, 64 = plain ResNet).
        style: "pytorch" or "caffe" (where the stride of a downsampling block sits).
        out_indices: which stages to return (0 = C2 ... 3 = C5).
        frozen_stages: -1 none; 0 stem; k stem and stages 1..k (weights and BN stats frozen).
        norm_cfg: {"type": "BN"|"SyncBN"|"GN", "requires_grad": bool, ...}.
        norm_eval: BatchNorm uses its moving statistics in training too.
        dcn, stage_with_dcn: deformable 3x3 convs, e.g. dict(type="DCNv2"), (False, True, True, True).
        zero_init_residual: last BN of each block starts with gamma = 0.
    """

    def __init__(self, depth=50, in_channels=3, stem_channels=64, base_channels=64, groups=1,
                 base_width=64, style="pytorch", strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1),
                 out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_cfg=None, norm_eval=False,
                 dcn=None, stage_with_dcn=(False, False, False, False), zero_init_residual=True,
                 name=None, **kwargs):
        if STAGE_BLOCKS.get(depth) is None:
            raise KdetError(f"ResNet depth must be one of (50, 101, 152), got {depth!r}")
        if style not in ("pytorch", "caffe"):
            raise KdetError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        stage_blocks = STAGE_BLOCKS[depth]
        out_indices = check_out_indices(out_indices, 4)
        strides = check_stage_flags(strides, 4, "strides")
        dilations = check_stage_flags(dilations, 4, "dilations")
        stage_with_dcn = check_stage_flags(stage_with_dcn, 4, "stage_with_dcn")
        norm_cfg = check_norm_cfg(norm_cfg)
        config = dict(depth=depth, in_channels=in_channels, stem_channels=stem_channels,
                      base_channels=base_channels, groups=groups, base_width=base_width,
                      style=style, strides=strides, dilations=dilations,
                      out_indices=out_indices, frozen_stages=frozen_stages, norm_cfg=norm_cfg,
                      norm_eval=norm_eval, dcn=dcn, stage_with_dcn=stage_with_dcn,
                      zero_init_residual=zero_init_residual)

        inputs = keras.Input((None, None, in_channels), name="images")
        x = InputCheck(in_channels, name="input_check")(inputs)
        stem_trainable = frozen_stages < 0
        x = blocks.conv(x, stem_channels, 7, "conv1", strides=2, padding=3, trainable=stem_trainable)
        x = blocks.norm(x, norm_cfg, "bn1", norm_eval, trainable=stem_trainable)
        x = blocks.relu(x, "relu")
        x = keras.layers.ZeroPadding2D(1, name="maxpool.pad")(x)  # inputs >= 0 after ReLU
        x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)

        outputs, out_channels, out_strides = [], [], []
        in_ch, total_stride = stem_channels, 4
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            mid = planes if groups == 1 else (planes * base_width // base_channels) * groups
            out_ch = planes * 4
            trainable = frozen_stages < i + 1
            for j in range(num_blocks):
                x = blocks.bottleneck(
                    x, in_ch, out_ch, mid, strides[i] if j == 0 else 1, f"layer{i + 1}.{j}",
                    groups=groups, dilation=dilations[i], style=style,
                    dcn=dcn if stage_with_dcn[i] else None, norm_cfg=norm_cfg,
                    norm_eval=norm_eval, trainable=trainable,
                    zero_init_residual=zero_init_residual)
                in_ch = out_ch
            total_stride *= strides[i]
            if i in out_indices:
                outputs.append(x)
                out_channels.append(out_ch)
                out_strides.append(total_stride)
        self._finish(inputs, outputs, out_channels, out_strides,
                     name or f"resnet{depth}" + (f"_{groups}x{base_width}d" if groups > 1 else ""),
                     kwargs)
        self._kdet_config = config

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._kdet_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def ResNeXt(depth=101, groups=32, base_width=4, **kwargs):
    """ResNeXt backbone, e.g. ``ResNeXt(101, groups=32, base_width=4)`` for X-101-32x4d."""
    return ResNet(depth=depth, groups=groups, base_width=base_width, **kwargs)
