"""Utilities: FLOPs/parameter counting."""
from kdet.utils.flops import count_flops, count_params
from kdet.utils.visualize import draw_detections, save_grid

__all__ = ["count_flops", "count_params", "draw_detections", "save_grid"]
