"""kdet.zoo: MMDetection model-zoo configs by name -> (model, recipe).

>>> model, recipe = kdet.zoo.build("mask_rcnn_regnetx-3.2GF_fpn_1x_coco")   # doctest: +SKIP
"""
from kdet.zoo.recipe import (  # noqa: F401
    MSTRAIN_RANGE, MSTRAIN_VALUE, PYCLS_NORM, PYTORCH_NORM, Recipe, SeedResult, ZooConfig,
)
from kdet.zoo.registry import CONFIG_DIR, build, get_config, list_configs  # noqa: F401

__all__ = ["list_configs", "get_config", "build", "Recipe", "SeedResult", "ZooConfig",
           "PYCLS_NORM", "PYTORCH_NORM", "MSTRAIN_RANGE", "MSTRAIN_VALUE", "CONFIG_DIR"]
