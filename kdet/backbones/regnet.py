"""RegNetX / RegNetY backbones (Radosavovic et al., "Designing Network Design Spaces", 2020).

A RegNet is a ResNet-style network (MMDetection implements it as a ResNet subclass) whose
stage widths/depths come from ``regnet_arch.generate_stages``: stem 3x3/2 conv (32 channels),
then four stages of X blocks (1x1 -> grouped 3x3 -> 1x1, bottleneck multiplier 1, stride on
the 3x3 conv), with squeeze-excitation after the 3x3 conv for RegNetY.

    >>> m = RegNet("regnetx_3.2gf")
    >>> m.out_channels, m.out_strides
    ([96, 192, 432, 1008], [4, 8, 16, 32])
"""
import keras

from kdet.backbones import blocks
from kdet.backbones.base import Backbone, InputCheck, check_out_indices, check_stage_flags
from kdet.backbones.regnet_arch import canonical_name, generate_stages, resolve_arch
from kdet.layers.norm import check_norm_cfg


@keras.saving.register_keras_serializable(package="kdet")
class RegNet(Backbone):
    """RegNet backbone -> stage outputs at strides 4, 8, 16, 32.

    Args:
        arch: a name ("regnetx_400mf" ... "regnetx_12gf", "regnety_*") or a dict
            ``dict(w0=, wa=, wm=, depth=, group_w=, bot_mul=[, se_ratio=])`` as in MMDetection.
        rounding: "pycls" (pycls / MMDetection / MMClassification weights) or "torchvision"
            (torchvision's RegNets, whose widths differ for some archs).
        out_indices, frozen_stages, norm_cfg, norm_eval, dcn, stage_with_dcn: as ``ResNet``.
        zero_init_residual: last BN of each block starts at gamma = 0 (pycls' default).
    """

    def __init__(self, arch="regnetx_3.2gf", in_channels=3, stem_channels=32,
                 strides=(2, 2, 2, 2), dilations=(1, 1, 1, 1), out_indices=(0, 1, 2, 3),
                 style="pytorch", frozen_stages=-1, norm_cfg=None, norm_eval=False, dcn=None,
                 stage_with_dcn=(False, False, False, False), zero_init_residual=True,
                 rounding="pycls", name=None, **kwargs):
        arch_dict = resolve_arch(arch)
        stages = generate_stages(arch_dict, rounding=rounding)
        num_stages = len(stages["widths"])
        out_indices = check_out_indices(out_indices, num_stages)
        strides = check_stage_flags(strides, num_stages, "strides")
        dilations = check_stage_flags(dilations, num_stages, "dilations")
        stage_with_dcn = check_stage_flags(stage_with_dcn, num_stages, "stage_with_dcn")
        norm_cfg = check_norm_cfg(norm_cfg)
        config = dict(arch=canonical_name(arch) if isinstance(arch, str) else arch_dict,
                      in_channels=in_channels, stem_channels=stem_channels, strides=strides,
                      dilations=dilations, out_indices=out_indices, style=style,
                      frozen_stages=frozen_stages, norm_cfg=norm_cfg, norm_eval=norm_eval,
                      dcn=dcn, stage_with_dcn=stage_with_dcn,
                      zero_init_residual=zero_init_residual, rounding=rounding)

        inputs = keras.Input((None, None, in_channels), name="images")
        x = InputCheck(in_channels, name="input_check")(inputs)
        stem_trainable = frozen_stages < 0
        x = blocks.conv(x, stem_channels, 3, "conv1", strides=2, padding=1, trainable=stem_trainable)
        x = blocks.norm(x, norm_cfg, "bn1", norm_eval, trainable=stem_trainable)
        x = blocks.relu(x, "relu")

        outputs, out_channels, out_strides = [], [], []
        in_ch, total_stride = stem_channels, 2
        for i in range(num_stages):
            width, group_w = stages["widths"][i], stages["group_widths"][i]
            mid = int(round(width * stages["bot_mul"]))
            trainable = frozen_stages < i + 1
            for j in range(stages["depths"][i]):
                # pycls: SE width = round(se_ratio * block input width)
                se = int(round(in_ch * stages["se_ratio"])) if stages["se_ratio"] else 0
                x = blocks.bottleneck(
                    x, in_ch, width, mid, strides[i] if j == 0 else 1, f"layer{i + 1}.{j}",
                    groups=mid // group_w, dilation=dilations[i], style=style, se_channels=se,
                    dcn=dcn if stage_with_dcn[i] else None, norm_cfg=norm_cfg,
                    norm_eval=norm_eval, trainable=trainable,
                    zero_init_residual=zero_init_residual)
                in_ch = width
            total_stride *= strides[i]
            if i in out_indices:
                outputs.append(x)
                out_channels.append(width)
                out_strides.append(total_stride)
        self._finish(inputs, outputs, out_channels, out_strides,
                     name or (canonical_name(arch) if isinstance(arch, str) else "regnet"), kwargs)
        self._kdet_config = config
        self.stage_widths = list(stages["widths"])
        self.stage_depths = list(stages["depths"])

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._kdet_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
