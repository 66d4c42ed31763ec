"""kdet.layers: reusable Keras layers."""
from kdet.layers.norm import FrozenStatsBatchNorm, build_norm, check_norm_cfg  # noqa: F401
from kdet.layers.deform_conv import DeformConv2D, ModulatedDeformConv2D  # noqa: F401
