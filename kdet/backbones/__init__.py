"""Backbones: images [B, H, W, 3] -> list of multi-scale feature maps (NHWC)."""
from kdet.backbones.base import Backbone, torch_state_map
from kdet.backbones.regnet import RegNet
from kdet.backbones.regnet_arch import ARCH_SETTINGS as REGNET_ARCHS
from kdet.backbones.regnet_arch import generate_stages as regnet_stages
from kdet.backbones.registry import build_backbone, backbone_names
from kdet.backbones.resnet import ResNet, ResNeXt

__all__ = ["Backbone", "RegNet", "ResNet", "ResNeXt", "REGNET_ARCHS", "regnet_stages",
           "build_backbone", "backbone_names", "torch_state_map"]
