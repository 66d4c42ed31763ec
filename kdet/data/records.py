"""The reader interface: what every dataset reader (COCO, later LVIS/VOC/Cityscapes) returns.

A reader turns an annotation source into a list of `ImageRecord`s plus a `DatasetInfo`;
`kdet.data.pipeline.detection_dataset` turns those into batches. A new dataset format
only needs a reader, never a new pipeline.
"""
import dataclasses
from typing import Any, List, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class ImageRecord:
    """One image and its objects, in original-image pixels.

    Attributes:
      path: image file path.
      image_id: the dataset's image id (int64).
      height, width: image size the annotations refer to (from the annotation file).
      boxes: [n, 4] float32 xyxy in original pixels (x2 = x + w, MMDetection v2; no -1).
      labels: [n] int32 contiguous class ids 0..num_classes-1.
      iscrowd: [n] bool; crowd objects are ignore regions. Readers put non-crowd first.
      segmentations: n raw COCO segmentations (polygon list, RLE dict) or None per object,
        decoded lazily by `decode_masks`.
    """
    path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    segmentations: List[Any]

    @property
    def num_objects(self):
        return int(self.labels.shape[0])

    @property
    def num_non_crowd(self):
        return int(np.count_nonzero(~self.iscrowd))


@dataclasses.dataclass
class DatasetInfo:
    """Class names and the map between contiguous labels and the dataset's category ids.

    `category_ids[label]` is the dataset's id of class `label` (sorted ascending, as
    MMDetection's CocoDataset orders `cat_ids`); the evaluator uses it to map back.
    """
    class_names: Sequence[str]
    category_ids: Sequence[int]

    @property
    def num_classes(self):
        return len(self.category_ids)

    @property
    def category_id_to_label(self):
        return {int(c): i for i, c in enumerate(self.category_ids)}

    def label_to_category_id(self, label):
        return int(self.category_ids[int(label)])


def _segmentation_to_rle(seg, height, width):
    from pycocotools import mask as mask_utils
    if isinstance(seg, list):  # polygons: list of flat [x0, y0, x1, y1, ...] lists
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, seg["size"][0], seg["size"][1])
    if isinstance(seg, dict):  # compressed RLE
        return seg
    return None


def decode_masks(record: ImageRecord) -> np.ndarray:
    """Decodes every object's segmentation to a bitmap (pycocotools, as `annToMask`).

    Returns uint8 [n, height, width] in {0, 1}. An object without a usable (missing,
    empty or malformed) segmentation gets its box filled, so masks and boxes line up.
    """
    h, w = int(record.height), int(record.width)
    out = np.zeros((record.num_objects, h, w), np.uint8)
    from pycocotools import mask as mask_utils
    for i, seg in enumerate(record.segmentations):
        try:
            rle = _segmentation_to_rle(seg, h, w) if seg is not None else None
            m = mask_utils.decode(rle) if rle is not None else None
        except (TypeError, ValueError, KeyError, IndexError):  # malformed: use the box
            m = None
        if m is not None and m.shape == (h, w):
            out[i] = m
            continue
        x1, y1, x2, y2 = record.boxes[i]
        out[i, int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = 1
    return out


def filter_records(records: Sequence[ImageRecord], filter_empty_gt: bool,
                   min_size: Optional[int] = None) -> List[ImageRecord]:
    """Drops images without non-crowd objects (when asked) and images smaller than `min_size`."""
    out = []
    for r in records:
        if filter_empty_gt and r.num_non_crowd == 0:
            continue
        if min_size is not None and min(r.height, r.width) < min_size:
            continue
        out.append(r)
    return out
