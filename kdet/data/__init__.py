"""kdet.data: COCO reader, MMDetection transforms, tf.data pipelines, synthetic dataset.

`kdet.data.synthetic` and `kdet.data.coco` need no TensorFlow; the pipeline names
(`coco_dataset`, `detection_dataset`) import it on first use.
"""
import importlib

from kdet.data.coco import coco_paths, dataset_info, read_coco  # noqa: F401
from kdet.data.records import DatasetInfo, ImageRecord, decode_masks  # noqa: F401
from kdet.data.synthetic import make_shapes_dataset, shapes_paths  # noqa: F401

_LAZY = {"coco_dataset": "kdet.data.pipeline", "detection_dataset": "kdet.data.pipeline",
         "NORMALIZATION": "kdet.data.transforms", "rescale_size": "kdet.data.transforms"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("pipeline", "transforms", "synthetic", "coco", "records"):
        return importlib.import_module(f"kdet.data.{name}")
    raise AttributeError(f"module 'kdet.data' has no attribute {name!r}")


__all__ = ["coco_dataset", "detection_dataset", "read_coco", "dataset_info", "coco_paths",
           "decode_masks",
           "DatasetInfo", "ImageRecord", "make_shapes_dataset", "shapes_paths",
           "NORMALIZATION", "rescale_size"]
