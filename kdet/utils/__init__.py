"""Utilities: FLOPs/parameter counting."""
from kdet.utils.flops import count_flops, count_params

__all__ = ["count_flops", "count_params"]
