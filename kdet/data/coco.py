"""COCO-format reader: annotation json + image folder -> `ImageRecord`s (see records.py).

Parsing follows MMDetection v2 `CocoDataset._parse_ann_info`: boxes xywh -> xyxy with
x2 = x + w (no -1); annotations flagged `ignore`, with w < 1 or h < 1, area <= 0, a box
wholly outside the image, or an unknown category are dropped; `iscrowd` objects are kept
as ignore regions. Beyond mmdet, a box partly outside the image is clipped to it, and an
image whose file is missing is skipped. Each kind of problem is reported by one warning
naming the images; `strict=True` raises `KdetError` at the first problem instead.
"""
import collections
import contextlib
import io
import json
import os
import warnings

import numpy as np

from kdet.data.records import DatasetInfo, ImageRecord
from kdet.errors import KdetError

_MAX_NAMED = 5  # images named per warning


class _Problems:
    """Collects skipped/repaired samples by reason; emits one warning per reason."""

    def __init__(self, source, strict):
        self.source, self.strict = source, strict
        self.by_reason = collections.OrderedDict()

    def add(self, reason, image_name):
        if self.strict:
            raise KdetError(f"{self.source}: image {image_name!r}: {reason} (strict=True)")
        self.by_reason.setdefault(reason, []).append(image_name)

    def warn(self):
        for reason, names in self.by_reason.items():
            uniq = list(dict.fromkeys(names))
            shown = ", ".join(repr(n) for n in uniq[:_MAX_NAMED])
            more = f" and {len(uniq) - _MAX_NAMED} more" if len(uniq) > _MAX_NAMED else ""
            warnings.warn(f"{self.source}: {reason}: {len(names)} case(s) in image(s) "
                          f"{shown}{more}", UserWarning, stacklevel=3)


def load_coco_api(ann_file):
    """Loads `ann_file` into a pycocotools COCO object; KdetError for missing/empty/bad json."""
    ann_file = os.fspath(ann_file)
    if not os.path.isfile(ann_file):
        raise KdetError(f"annotation file not found: {ann_file}")
    if os.path.getsize(ann_file) == 0:
        raise KdetError(f"annotation file is empty: {ann_file}")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KdetError(f"annotation file is not valid json: {ann_file}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise KdetError(f"not a COCO annotation file (no 'images' list): {ann_file}")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise KdetError(f"COCO annotation file has no 'categories': {ann_file}")
    data.setdefault("annotations", [])
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise KdetError(f"malformed COCO annotation file {ann_file}: missing/bad {e}") from None
    return coco


def dataset_info(ann_file_or_coco):
    """`DatasetInfo` (class names, category ids sorted ascending) of a COCO annotation file."""
    coco = ann_file_or_coco
    if not hasattr(coco, "getCatIds"):
        coco = load_coco_api(coco)
    cat_ids = sorted(int(c) for c in coco.getCatIds())
    names = [coco.cats[c].get("name", str(c)) for c in cat_ids]
    return DatasetInfo(class_names=tuple(names), category_ids=tuple(cat_ids))


def _parse_image(coco, img, image_dir, cat2label, problems):
    name = img.get("file_name", str(img.get("id")))
    width, height = int(img.get("width", 0)), int(img.get("height", 0))
    if width <= 0 or height <= 0:
        problems.add("image without a positive width/height in the json, skipped", name)
        return None
    path = os.path.join(image_dir, name)
    if not os.path.isfile(path):
        problems.add("image file missing, skipped", name)
        return None
    objs = []
    for ann in coco.imgToAnns.get(img["id"], []):
        if ann.get("ignore", False):
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            problems.add("annotation without a 4-number bbox, dropped", name)
            continue
        x, y, w, h = (float(v) for v in bbox)
        if ann.get("category_id") not in cat2label:
            problems.add(f"annotation with unknown category id {ann.get('category_id')}, "
                         "dropped", name)
            continue
        if float(ann.get("area", w * h)) <= 0 or w <= 0 or h <= 0:
            problems.add("annotation with zero or negative area, dropped", name)
            continue
        # mmdet: drop a box with no overlap with the image, then w < 1 or h < 1.
        ix1, iy1 = max(x, 0.0), max(y, 0.0)
        ix2, iy2 = min(x + w, float(width)), min(y + h, float(height))
        if ix2 <= ix1 or iy2 <= iy1:
            problems.add("box wholly outside the image, dropped", name)
            continue
        if w < 1 or h < 1:  # mmdet drops these silently; so do we
            continue
        if (ix1, iy1, ix2, iy2) != (x, y, x + w, y + h):
            problems.add("box partly outside the image, clipped", name)
        objs.append((bool(ann.get("iscrowd", 0)), [ix1, iy1, ix2, iy2],
                     cat2label[ann["category_id"]], ann.get("segmentation")))
    objs.sort(key=lambda o: o[0])  # stable: non-crowd first, file order kept
    n = len(objs)
    return ImageRecord(
        path=path, image_id=int(img["id"]), height=height, width=width,
        boxes=np.asarray([o[1] for o in objs], np.float32).reshape(n, 4),
        labels=np.asarray([o[2] for o in objs], np.int32).reshape(n),
        iscrowd=np.asarray([o[0] for o in objs], bool).reshape(n),
        segmentations=[o[3] for o in objs])


def read_coco(ann_file, image_dir, strict=False):
    """Reads a COCO-format dataset.

    Args:
      ann_file: instances json (pycocotools format).
      image_dir: folder that `file_name`s are relative to.
      strict: raise KdetError at the first bad sample instead of skipping it with a warning.

    Returns:
      (records, info): list of `ImageRecord` in pycocotools' image order (ascending id as
      stored), and the `DatasetInfo`. Raises KdetError when no usable image is left.
    """
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise KdetError(f"image directory not found: {image_dir}")
    coco = load_coco_api(ann_file)
    info = dataset_info(coco)
    cat2label = info.category_id_to_label
    problems = _Problems(os.path.basename(os.fspath(ann_file)), strict)
    records = []
    for img_id in coco.getImgIds():
        rec = _parse_image(coco, coco.imgs[img_id], image_dir, cat2label, problems)
        if rec is not None:
            records.append(rec)
    problems.warn()
    if not records:
        raise KdetError(f"no usable image in {ann_file} (image dir {image_dir})")
    return records, info


def coco_paths(data_dir, split="train"):
    """(ann_file, image_dir) of `split` in a COCO-layout folder.

    Understands the official layout (`annotations/instances_train2017.json` + `train2017/`,
    likewise `val2017`) and the synthetic one (`annotations/instances_train.json` +
    `images/`). `split` is 'train', 'val' or a full name such as 'val2017'.
    """
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise KdetError(f"data directory not found: {data_dir}")
    names = [split] if split[-1].isdigit() else [split, f"{split}2017", f"{split}2014"]
    for name in names:
        ann = os.path.join(data_dir, "annotations", f"instances_{name}.json")
        if not os.path.isfile(ann):
            continue
        for image_dir in (os.path.join(data_dir, name), os.path.join(data_dir, "images")):
            if os.path.isdir(image_dir):
                return ann, image_dir
        raise KdetError(f"found {ann} but no image folder {name}/ or images/ in {data_dir}")
    raise KdetError(f"no annotations/instances_{{{','.join(names)}}}.json in {data_dir}")
