"""Backbone names -> constructors (``"regnetx_3.2gf"``, ``"resnet50"``, ``"resnext101_32x4d"``)."""
from kdet.backbones.regnet_arch import ARCH_SETTINGS, canonical_name
from kdet.errors import KdetError

_RESNETS = {
    "resnet50": dict(depth=50), "resnet101": dict(depth=101), "resnet152": dict(depth=152),
    "resnext101_32x4d": dict(depth=101, groups=32, base_width=4),
    "resnext101_64x4d": dict(depth=101, groups=64, base_width=4),
}


def backbone_names():
    return list(ARCH_SETTINGS) + list(_RESNETS)


def build_backbone(backbone, **kwargs):
    """A backbone from a name, a config dict ({"type": "RegNet", ...}) or a built instance."""
    from kdet.backbones.base import Backbone
    from kdet.backbones.regnet import RegNet
    from kdet.backbones.resnet import ResNet
    if isinstance(backbone, Backbone):
        if kwargs:
            raise KdetError("backbone options cannot be applied to an already-built backbone")
        return backbone
    if isinstance(backbone, dict):
        cfg = dict(backbone)
        kind = cfg.pop("type", None)
        classes = {"RegNet": RegNet, "ResNet": ResNet}
        if kind == "ResNeXt":
            kind = "ResNet"
        if kind not in classes:
            raise KdetError(f"backbone type must be one of {list(classes) + ['ResNeXt']}, got {kind!r}")
        return classes[kind](**{**cfg, **kwargs})
    if isinstance(backbone, str):
        key = backbone.strip().lower().replace("-", "_")
        if key in _RESNETS:
            return ResNet(**{**_RESNETS[key], **kwargs})
        try:
            return RegNet(canonical_name(key), **kwargs)
        except KdetError:
            raise KdetError(f"unknown backbone {backbone!r}; valid names: "
                            f"{', '.join(backbone_names())}") from None
    raise KdetError(f"backbone must be a name, a dict or a Backbone, got {type(backbone).__name__}")
