"""COCO reader: mmdet v2 parsing rules, category map, masks, and bad input."""
import json
import os
import warnings

import numpy as np
import pytest

from kdet.data import DatasetInfo, coco_paths, dataset_info, decode_masks, read_coco
from kdet.errors import KdetError
from tests.data.conftest import solid, write_coco

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

CATS = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 11, "name": "eleven"}]


def _one_image(tmp_path, anns, cats=CATS, h=40, w=50):
    return write_coco(str(tmp_path), [{"id": 5, "file_name": "x.png", "array": solid(h, w, 9)}],
                      anns, cats)


def test_parsing_follows_mmdet(tmp_path):
    ann, img_dir = _one_image(tmp_path, [
        {"image_id": 5, "category_id": 11, "bbox": [2.5, 3, 10, 20]},
        {"image_id": 5, "category_id": 3, "bbox": [0, 0, 50, 40], "iscrowd": 1},
        {"image_id": 5, "category_id": 7, "bbox": [30, 5, 0.5, 10]},      # w < 1: dropped
        {"image_id": 5, "category_id": 7, "bbox": [1, 1, 5, 5], "ignore": 1},  # dropped
        {"image_id": 5, "category_id": 3, "bbox": [20, 10, 4, 6]},
    ])
    records, info = read_coco(ann, img_dir)
    assert info == DatasetInfo(("three", "seven", "eleven"), (3, 7, 11))
    assert info.category_id_to_label == {3: 0, 7: 1, 11: 2}
    assert info.label_to_category_id(2) == 11 and info.num_classes == 3
    assert dataset_info(ann) == info
    (r,) = records
    assert (r.image_id, r.height, r.width) == (5, 40, 50)
    assert r.path == os.path.join(img_dir, "x.png")
    # xywh -> xyxy with x2 = x + w (no -1); non-crowd first, crowd last
    np.testing.assert_array_equal(r.boxes, [[2.5, 3, 12.5, 23], [20, 10, 24, 16], [0, 0, 50, 40]])
    np.testing.assert_array_equal(r.labels, [2, 0, 0])
    np.testing.assert_array_equal(r.iscrowd, [False, False, True])
    assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int32
    assert r.num_non_crowd == 2


def test_decode_masks_polygon_and_rle(tmp_path):
    from pycocotools import mask as mask_utils
    m = np.zeros((40, 50), np.uint8)
    m[5:15, 10:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(m))
    compressed["counts"] = compressed["counts"].decode()
    flat = m.flatten(order="F")
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]]))
    ann, img_dir = _one_image(tmp_path, [
        {"image_id": 5, "category_id": 3, "bbox": [10, 5, 20, 10],
         "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
        {"image_id": 5, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 1,
         "segmentation": {"counts": runs.tolist(), "size": [40, 50]}},
        {"image_id": 5, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 1,
         "segmentation": compressed},
        {"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4], "segmentation": []},
        {"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4], "segmentation": {"size": 3}},
        {"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4],
         "segmentation": {"counts": "bad", "size": [40, 50]}},
    ])
    (r,), _ = read_coco(ann, img_dir)
    masks = decode_masks(r)
    assert masks.shape == (6, 40, 50) and masks.dtype == np.uint8
    np.testing.assert_array_equal(r.iscrowd, [False, False, False, False, True, True])
    for i in (0, 4, 5):  # polygon, uncompressed and compressed RLE (crowds last)
        np.testing.assert_array_equal(masks[i], m)
    box = np.zeros_like(m)
    box[2:6, 1:4] = 1  # no usable (empty, malformed) segmentation: the box is filled
    for i in (1, 2, 3):
        np.testing.assert_array_equal(masks[i], box)


def test_bad_annotations_are_skipped_with_one_warning_each(tmp_path):
    ann, img_dir = _one_image(tmp_path, [
        {"image_id": 5, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 0},
        {"image_id": 5, "category_id": 3, "bbox": [60, 5, 10, 10]},     # wholly outside
        {"image_id": 5, "category_id": 3, "bbox": [45, -5, 10, 10]},    # partly: clipped
        {"image_id": 5, "category_id": 99, "bbox": [5, 5, 10, 10]},     # unknown category
        {"image_id": 5, "category_id": 3, "bbox": [5, 5, -3, 10]},      # negative size
        {"image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4]},        # fine
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (r,), _ = read_coco(ann, img_dir)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for reason in ("zero or negative area", "wholly outside", "partly outside",
                   "unknown category id 99"):
        assert sum(reason in m and "'x.png'" in m for m in messages) == 1, (reason, messages)
    assert len(messages) == 4
    np.testing.assert_array_equal(r.boxes, [[45, 0, 50, 5], [1, 1, 5, 5]])
    with pytest.raises(KdetError, match="x.png"):
        read_coco(ann, img_dir, strict=True)


def test_missing_image_file_is_skipped_then_nothing_left_is_an_error(tmp_path):
    ann, img_dir = write_coco(str(tmp_path), [
        {"id": 1, "file_name": "here.png", "array": solid(8, 8, 0)},
        {"id": 2, "file_name": "gone.png", "array": solid(8, 8, 0), "write": False}], [])
    with pytest.warns(UserWarning, match="image file missing.*'gone.png'"):
        records, _ = read_coco(ann, img_dir)
    assert [r.image_id for r in records] == [1]
    with pytest.raises(KdetError, match="gone.png"):
        read_coco(ann, img_dir, strict=True)
    os.remove(os.path.join(img_dir, "here.png"))
    with pytest.warns(UserWarning), pytest.raises(KdetError, match="no usable image"):
        read_coco(ann, img_dir)


@pytest.mark.parametrize("content, match", [
    ("", "empty"), ("{not json", "not valid json"), ("[]", "no 'images'"),
    (json.dumps({"images": [], "annotations": []}), "no 'categories'"),
    (json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}), "no usable image"),
    (json.dumps({"images": [{"file_name": "a.jpg"}], "categories": [{"id": 1}]}), "malformed"),
])
def test_bad_annotation_files(tmp_path, content, match):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(KdetError, match=match):
        read_coco(path, tmp_path)


def test_missing_paths(tmp_path):
    with pytest.raises(KdetError, match="annotation file not found"):
        read_coco(tmp_path / "none.json", tmp_path)
    ann, _ = _one_image(tmp_path, [])
    with pytest.raises(KdetError, match="image directory not found"):
        read_coco(ann, tmp_path / "no_dir")


def test_coco_paths_official_and_synthetic_layouts(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    (tmp_path / "val2017").mkdir()
    assert coco_paths(tmp_path, "val") == (str(tmp_path / "annotations" /
                                               "instances_val2017.json"), str(tmp_path / "val2017"))
    (tmp_path / "annotations" / "instances_train.json").write_text("{}")
    with pytest.raises(KdetError, match="no image folder"):
        coco_paths(tmp_path, "train")
    (tmp_path / "images").mkdir()
    assert coco_paths(tmp_path, "train")[1] == str(tmp_path / "images")
    with pytest.raises(KdetError, match="instances_"):
        coco_paths(tmp_path, "test")
    with pytest.raises(KdetError, match="data directory not found"):
        coco_paths(tmp_path / "nope")
