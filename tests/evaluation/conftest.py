"""A small hand-written COCO ground truth: 4 images, non-contiguous category ids, polygons,
a crowd region and an image without objects."""
import json

import numpy as np
import pytest

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"},
              {"id": 7, "name": "triangle"}]
IMAGES = [
    {"id": 10, "file_name": "a.jpg", "height": 60, "width": 80},
    {"id": 11, "file_name": "b.jpg", "height": 50, "width": 40},
    {"id": 12, "file_name": "c.jpg", "height": 64, "width": 64},
    {"id": 13, "file_name": "empty.jpg", "height": 30, "width": 30},
]


def _rect(ann_id, img_id, cat, x, y, w, h, iscrowd=0):
    poly = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [x, y, w, h],
            "area": float(w * h), "iscrowd": iscrowd, "segmentation": [poly]}


def _tri(ann_id, img_id, cat, x, y, w, h):
    poly = [x, y + h, x + w / 2, y, x + w, y + h]
    return {"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [x, y, w, h],
            "area": float(w * h / 2), "iscrowd": 0, "segmentation": [poly]}


ANNOTATIONS = [
    _rect(1, 10, 3, 5, 6, 30, 20),
    _rect(2, 10, 3, 20, 15, 30, 25),        # overlaps annotation 1 (same class)
    _tri(3, 10, 7, 50, 30, 24, 26),
    _rect(4, 11, 1, 4, 4, 12, 12),
    _rect(5, 11, 1, 0, 25, 40, 25, iscrowd=1),   # crowd region
    _tri(6, 12, 7, 10, 10, 40, 44),
    _rect(7, 12, 3, 2, 50, 8, 9),
]


@pytest.fixture
def coco_dict():
    return {"images": [dict(i) for i in IMAGES], "annotations": [dict(a) for a in ANNOTATIONS],
            "categories": [dict(c) for c in CATEGORIES]}


@pytest.fixture
def ann_file(tmp_path, coco_dict):
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(coco_dict))
    return str(path)


def gt_masks(coco_dict, img_id):
    """[K, h, w] uint8 masks and the non-crowd annotations of one image."""
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = coco_dict
    coco.createIndex()
    anns = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
    img = coco.imgs[img_id]
    masks = np.stack([coco.annToMask(a) for a in anns]) if anns else \
        np.zeros((0, img["height"], img["width"]), np.uint8)
    return masks, anns
