"""The synthetic shapes dataset is valid COCO whose annotations match its pixels."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from kdet.data.synthetic import _rasterize, make_shapes_dataset, mask_to_polygons, shapes_paths
from kdet.errors import KdetError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes40"), num_images=40,
                               image_size=256, seed=0, val_fraction=0.2)


def _load(path):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def test_layout_and_split(shapes):
    paths = shapes_paths(shapes.root)
    assert (paths["train_ann"], paths["val_ann"], paths["image_dir"]) == \
        (shapes.train_ann, shapes.val_ann, shapes.image_dir)
    train, val = _load(shapes.train_ann), _load(shapes.val_ann)
    assert (len(train.imgs), len(val.imgs)) == (32, 8) == (shapes.num_train, shapes.num_val)
    assert not set(train.imgs) & set(val.imgs)
    assert sorted(os.listdir(shapes.image_dir)) == [f"{i:06d}.jpg" for i in range(1, 41)]
    assert [c["name"] for c in train.loadCats(train.getCatIds())] == \
        ["circle", "square", "triangle"]
    assert train.getCatIds() == [1, 2, 3]
    for coco in (train, val):  # every split has an empty image and a crowd
        assert any(not coco.imgToAnns[i] for i in coco.imgs)
        assert any(a["iscrowd"] for a in coco.anns.values())
    assert len({a["id"] for c in (train, val) for a in c.anns.values()}) == shapes.num_objects


def test_masks_agree_with_boxes_areas_and_each_other(shapes):
    from PIL import Image
    sizes = set()
    for ann_file in (shapes.train_ann, shapes.val_ann):
        coco = _load(ann_file)
        for img_id, anns in coco.imgToAnns.items():
            info = coco.imgs[img_id]
            union = np.zeros((info["height"], info["width"]), np.int32)
            image = np.asarray(Image.open(os.path.join(shapes.image_dir, info["file_name"])))
            for ann in anns:
                m = coco.annToMask(ann)
                assert m.any()
                rle = mask_utils.encode(np.asfortranarray(m))
                np.testing.assert_allclose(mask_utils.toBbox(rle), ann["bbox"])
                assert ann["area"] == m.sum()
                if ann["iscrowd"]:
                    assert isinstance(ann["segmentation"]["counts"], list)
                else:
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
                    # the object's interior (eroded by 2 px) is one flat colour in the JPEG
                    core = m.astype(bool)
                    for _ in range(2):
                        core = core & np.roll(core, 1, 0) & np.roll(core, -1, 0) \
                            & np.roll(core, 1, 1) & np.roll(core, -1, 1)
                    if core.sum() > 50:
                        assert image[core].std(0).max() < 12, ann["id"]
                a = ann["area"]
                sizes.add("small" if a < 32 ** 2 else "medium" if a < 96 ** 2 else "large")
                union += m
            assert union.max() <= 1, "visible parts of objects must not overlap"
    assert sizes == {"small", "medium", "large"}


def test_occlusion_happens(shapes):
    """Some objects are partly covered: their visible polygon is a pixel staircase."""
    coco = _load(shapes.train_ann)
    occluded = [a for a in coco.anns.values() if not a["iscrowd"]
                and all(float(v).is_integer() for p in a["segmentation"] for v in p)]
    assert len(occluded) >= 3


def test_deterministic_for_a_seed(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_images=6, image_size=64, seed=5)
    b = make_shapes_dataset(tmp_path / "b", num_images=6, image_size=64, seed=5)
    c = make_shapes_dataset(tmp_path / "c", num_images=6, image_size=64, seed=6)

    def digest(d):
        h = hashlib.sha256()
        for ann in (d.train_ann, d.val_ann):
            h.update(open(ann, "rb").read())
        for name in sorted(os.listdir(d.image_dir)):
            h.update(open(os.path.join(d.image_dir, name), "rb").read())
        return h.hexdigest()
    assert digest(a) == digest(b) != digest(c)


def test_mask_to_polygons_is_exact_and_refuses_holes():
    rng = np.random.default_rng(0)
    exact = 0
    for _ in range(100):
        m = rng.uniform(size=(9, 11)) < 0.55
        polys = mask_to_polygons(m)
        if polys is not None:
            exact += 1
            assert (_rasterize(polys, 9, 11) == m).all()
    assert exact > 30
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert mask_to_polygons(ring) is None
    two = np.zeros((5, 8), bool)
    two[1:3, 1:3] = True
    two[2:4, 5:7] = True
    assert len(mask_to_polygons(two)) == 2


@pytest.mark.parametrize("kwargs", [dict(image_size=16), dict(num_images=0),
                                    dict(val_fraction=1.0), dict(image_size="big")])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(KdetError):
        make_shapes_dataset(tmp_path, **{"num_images": 2, **kwargs})


def test_cli_synth_and_info(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-m", "kdet.cli", "data", "synth", str(tmp_path),
                          "--num-images", "5", "--image-size", "48", "64", "--seed", "2"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "wrote 5 images" in out.stdout and "instances_train.json" in out.stdout
    doc = json.load(open(tmp_path / "annotations" / "instances_train.json"))
    assert {(i["height"], i["width"]) for i in doc["images"]} == {(48, 64)}
    out = subprocess.run([sys.executable, "-m", "kdet.cli", "data", "info",
                          str(tmp_path / "annotations" / "instances_val.json"),
                          str(tmp_path / "images")], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "usable images" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "kdet.cli", "data", "info",
                          str(tmp_path / "nope.json"), str(tmp_path)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "annotation file not found" in out.stderr
