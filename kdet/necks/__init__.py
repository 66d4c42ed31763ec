"""kdet.necks: feature pyramids on top of backbones."""
from kdet.necks.fpn import FPN  # noqa: F401
