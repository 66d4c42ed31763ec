"""``RetinaHead`` (Lin et al., ICCV 2017, arXiv:1708.02002), MMDetection v2's ``RetinaHead``.

Two towers of ``stacked_convs`` 3x3 convs + ReLU (classification and regression), then a 3x3
conv to A * C class logits (``retina_cls``, bias initialised to the prior probability 0.01)
and a 3x3 conv to A * 4 deltas (``retina_reg``). Defaults are retinanet_r50_fpn_1x_coco.py:
anchors with octave_base_scale 4, scales_per_octave 3, ratios (0.5, 1, 2), strides 8..128;
MaxIoU 0.5 / 0.4 / 0; sigmoid focal loss (2, 0.25); L1 on deltas (target_stds 1).

Layer names follow mmdet's module tree (``cls_convs.{i}.conv``, ``retina_cls``, ...), so
checkpoint keys ``bbox_head.<name>.weight`` map one to one.
"""
import math

import keras

from kdet.errors import KdetError
from kdet.heads.dense.anchor_head import AnchorHead
from kdet.layers.torch_layout import layer_params

# RetinaNet paper sec. 4.1: bias b = -log((1 - pi) / pi), pi = 0.01.
PRIOR_PROB = 0.01


def prior_bias(prob=PRIOR_PROB):
    """Classification bias for an initial foreground probability ``prob``."""
    return -math.log((1.0 - prob) / prob)


@keras.saving.register_keras_serializable(package="kdet")
class RetinaHead(AnchorHead):
    """RetinaNet head.

    Args:
        num_classes, in_channels, feat_channels: see :class:`AnchorHead` (FPN: 256, 256).
        stacked_convs: convs per tower (4).
        norm: None (RetinaNet) or "GN" (GroupNorm with 32 groups after each tower conv, no
            conv bias; ATSS / PAA).
        **kwargs: :class:`AnchorHead` arguments (anchor_generator, bbox_coder, assigner,
            losses, test_cfg, ...).
    """

    cls_name, reg_name = "retina_cls", "retina_reg"

    def __init__(self, num_classes, stacked_convs=4, norm=None, **kwargs):
        if norm not in (None, "GN"):
            raise KdetError(f"norm must be None or 'GN', got {norm!r}")
        feat = int(kwargs.get("feat_channels", 256))
        if norm == "GN" and feat % 32:
            raise KdetError(f"GroupNorm(32) needs feat_channels divisible by 32, got {feat}")
        self.stacked_convs = int(stacked_convs)
        self.norm = norm
        super().__init__(num_classes, **kwargs)

    def _conv(self, filters, name, bias=True, bias_init="zeros"):
        # mmdet RetinaHead.init_weights: normal_init(std=0.01) on every conv.
        return keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=bias, name=name, dtype=self.dtype_policy,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=bias_init)

    def _init_layers(self):
        self.cls_convs, self.reg_convs, self.cls_norms, self.reg_norms = [], [], [], []
        for tower, norms, prefix in ((self.cls_convs, self.cls_norms, "cls_convs"),
                                     (self.reg_convs, self.reg_norms, "reg_convs")):
            for i in range(self.stacked_convs):
                tower.append(self._conv(self.feat_channels, f"{prefix}.{i}.conv",
                                        bias=self.norm is None))
                if self.norm == "GN":
                    norms.append(keras.layers.GroupNormalization(
                        32, epsilon=1e-5, name=f"{prefix}.{i}.gn", dtype=self.dtype_policy))
        a = self.num_base_priors
        self.conv_cls = self._conv(a * self.cls_out_channels, self.cls_name,
                                   bias_init=keras.initializers.Constant(prior_bias()))
        self.conv_reg = self._conv(a * 4, self.reg_name)

    def _build_layers(self, shape):
        feat = shape[:-1] + (self.feat_channels,)
        for tower, norms in ((self.cls_convs, self.cls_norms), (self.reg_convs, self.reg_norms)):
            for i, conv in enumerate(tower):
                conv.build(shape if i == 0 else feat)
                if norms:
                    norms[i].build(feat)
        self.conv_cls.build(feat if self.stacked_convs else shape)
        self.conv_reg.build(feat if self.stacked_convs else shape)

    def _tower(self, x, convs, norms, training):
        for i, conv in enumerate(convs):
            x = conv(x)
            if norms:
                x = norms[i](x, training=training)
            x = keras.activations.relu(x)
        return x

    def forward_towers(self, x, training=None):
        """(classification feature, regression feature) of one level."""
        return (self._tower(x, self.cls_convs, self.cls_norms, training),
                self._tower(x, self.reg_convs, self.reg_norms, training))

    def forward_single(self, x, level, training=None):
        cls_feat, reg_feat = self.forward_towers(x, training)
        return {"cls_scores": self.conv_cls(cls_feat), "bbox_preds": self.conv_reg(reg_feat)}

    def torch_state_map(self, prefix="bbox_head"):
        """mmdet ``RetinaHead`` / ``ATSSHead`` towers (mmcv ``ConvModule``): without norm
        ``{prefix}.cls_convs.{i}.conv.{weight,bias}``; with GN ``.conv.weight`` (no bias: the
        norm follows) and ``.gn.{weight,bias}`` (GroupNorm(32) affine; no running stats), then
        the prediction convs (``retina_cls`` / ``retina_reg``; ``atss_*`` for ATSS)."""
        out = {}
        for tower, norms, name in ((self.cls_convs, self.cls_norms, "cls_convs"),
                                   (self.reg_convs, self.reg_norms, "reg_convs")):
            for i, conv in enumerate(tower):
                out.update(layer_params(conv, f"{prefix}.{name}.{i}.conv"))
                if norms:
                    out.update(layer_params(norms[i], f"{prefix}.{name}.{i}.gn"))
        out.update(super().torch_state_map(prefix))
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"stacked_convs": self.stacked_convs, "norm": self.norm})
        return config
