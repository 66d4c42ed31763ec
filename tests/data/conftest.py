"""Fixtures for kdet.data tests: a small synthetic dataset and a hand-built COCO folder."""
import json
import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """16 non-square (96 x 128) synthetic images: 12 train, 4 val."""
    from kdet.data.synthetic import make_shapes_dataset
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_images=16,
                               image_size=(96, 128), seed=0, val_fraction=0.25)


def save_image(path, array, mode=None, fmt=None):
    """Saves uint8 `array` with Pillow, converted to `mode` ('L', 'CMYK', 'RGBA', ...)."""
    from PIL import Image
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    kwargs = {"quality": 95} if (fmt or "").upper() == "JPEG" else {}
    img.save(path, format=fmt, **kwargs)


def write_coco(root, images, annotations, categories=None):
    """Writes root/ann.json and root/img/<file_name> for `images`: dicts with id,
    file_name, array (uint8 [h, w, 3]) and optional mode/fmt. Returns (ann, img_dir)."""
    img_dir = os.path.join(root, "img")
    os.makedirs(img_dir, exist_ok=True)
    entries = []
    for im in images:
        arr = im["array"]
        if im.get("write", True):
            save_image(os.path.join(img_dir, im["file_name"]), arr, im.get("mode"),
                       im.get("fmt"))
        entries.append({"id": im["id"], "file_name": im["file_name"],
                        "height": int(arr.shape[0]), "width": int(arr.shape[1])})
    anns = []
    for i, a in enumerate(annotations):
        x, y, w, h = a["bbox"]
        ann = {"id": i + 1, "iscrowd": 0, "area": float(w * h),
               "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
        ann.update(a)
        anns.append(ann)
    doc = {"images": entries, "annotations": anns,
           "categories": categories or [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    ann_file = os.path.join(root, "ann.json")
    with open(ann_file, "w") as f:
        json.dump(doc, f)
    return ann_file, img_dir


def solid(h, w, rgb):
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()
