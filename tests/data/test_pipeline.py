"""coco_dataset: batch contract (DESIGN.md), mmdet transforms end to end, determinism,
image formats and bad input."""
import numpy as np
import pytest
import tensorflow as tf

from kdet.data import coco_dataset
from kdet.data.transforms import NORMALIZATION
from kdet.errors import KdetError
from tests.data.conftest import solid, write_coco

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

SMALL = (256, 192)   # (long, short) edge bound used instead of (1333, 800) to stay fast


def _all(ds):
    """Every batch of `ds` as numpy, concatenated per key (a list of per-batch arrays for
    keys whose spatial size varies between batches)."""
    batches = [{"images": im.numpy(), **{k: v.numpy() for k, v in gt.items()}}
               for im, gt in ds]
    out = {}
    for k in batches[0]:
        parts = [b[k] for b in batches]
        same = len({p.shape[1:] for p in parts}) == 1
        out[k] = np.concatenate(parts) if same else parts
    return out


def _denorm(images, style="pytorch"):
    cfg = NORMALIZATION[style]
    x = images * np.array(cfg["std"]) + np.array(cfg["mean"])
    return x if cfg["to_rgb"] else x[..., ::-1]


def test_batch_contract(shapes_small):
    ds, info = coco_dataset(shapes_small.train_ann, shapes_small.image_dir, batch_size=2,
                            img_scale=SMALL, with_masks=True, max_instances=12, seed=0,
                            return_info=True)
    assert info.category_ids == (1, 2, 3)
    spec_images, spec_gt = ds.element_spec
    assert spec_images.shape.as_list() == [2, None, None, 3]
    assert set(spec_gt) == {"boxes", "labels", "ignore", "masks", "image_id", "orig_size",
                            "img_shape", "scale_factor"}
    images, gt = next(iter(ds))
    assert images.dtype == tf.float32 and images.shape[0] == 2
    assert images.shape[1] % 32 == 0 and images.shape[2] % 32 == 0
    dtypes = {k: v.dtype for k, v in gt.items()}
    assert dtypes == {"boxes": tf.float32, "labels": tf.int32, "ignore": tf.bool,
                      "masks": tf.uint8, "image_id": tf.int64, "orig_size": tf.int32,
                      "img_shape": tf.int32, "scale_factor": tf.float32}
    assert gt["boxes"].shape == (2, 12, 4) and gt["labels"].shape == (2, 12)
    assert gt["masks"].shape == (2, 12) + tuple(images.shape[1:3])
    # (96, 128) images under (256, 192): s = min(256/128, 192/96) = 2 -> (192, 256)
    np.testing.assert_array_equal(gt["orig_size"], [[96, 128]] * 2)
    np.testing.assert_array_equal(gt["img_shape"], [[192, 256]] * 2)
    np.testing.assert_array_equal(gt["scale_factor"], [[2.0, 2.0]] * 2)
    labels, boxes, masks = gt["labels"].numpy(), gt["boxes"].numpy(), gt["masks"].numpy()
    assert (labels >= -1).all() and (labels < 3).all() and (labels >= 0).any()
    assert (boxes[labels < 0] == 0).all() and (masks[labels < 0] == 0).all()
    for b, n in zip(*np.nonzero(labels >= 0)):   # masks line up with boxes
        ys, xs = np.nonzero(masks[b, n])
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                   boxes[b, n], atol=2.0)
    # padding (beyond img_shape) is exactly 0 after normalisation, as mmdet pads
    assert images.shape[1] == 192 and images.shape[2] == 256  # already multiples of 32


def _solid_dataset(tmp_path, hw=(30, 40), rgb=(200, 100, 50), fmt="PNG", mode=None):
    name = "img." + ("jpg" if fmt == "JPEG" else fmt.lower())
    return write_coco(str(tmp_path), [{"id": 1, "file_name": name, "fmt": fmt, "mode": mode,
                                       "array": solid(*hw, rgb)}],
                      [{"image_id": 1, "category_id": 2, "bbox": [4, 6, 10, 8]}])


@pytest.mark.parametrize("style", ["pytorch", "caffe"])
def test_normalisation_resize_and_zero_padding(tmp_path, style):
    ann, img_dir = _solid_dataset(tmp_path, hw=(480, 640))
    d = _all(coco_dataset(ann, img_dir, training=False, batch_size=1, style=style))
    # hand-computed mmcv rule for (1333, 800): s = 800/480 -> (800, 1067), pad to 1088
    assert d["images"].shape == (1, 800, 1088, 3)
    np.testing.assert_array_equal(d["img_shape"], [[800, 1067]])
    np.testing.assert_allclose(d["scale_factor"], [[800 / 480, 1067 / 640]], rtol=1e-6)
    cfg = NORMALIZATION[style]
    rgb = np.array([200., 100., 50.])
    expected = ((rgb if cfg["to_rgb"] else rgb[::-1]) - cfg["mean"]) / cfg["std"]
    np.testing.assert_allclose(d["images"][0, :800, :1067], np.broadcast_to(expected,
                               (800, 1067, 3)), rtol=1e-5)
    assert (d["images"][0, :, 1067:] == 0).all()
    np.testing.assert_allclose(d["boxes"][0, 0], [4 * 1067 / 640, 10, 14 * 1067 / 640, 23.333334],
                               rtol=1e-5)
    assert d["labels"][0, 0] == 1 and (d["labels"][0, 1:] == -1).all()


def test_pad_to_gives_static_shapes(shapes_small):
    ds = coco_dataset(shapes_small.val_ann, shapes_small.image_dir, training=False,
                      batch_size=2, img_scale=(400, 300), pad_to=(224, 256), with_masks=True,
                      mask_size=(56, 64), max_instances=8)
    images, gt = ds.element_spec
    assert images.shape.as_list() == [None, 224, 256, 3]
    assert gt["masks"].shape.as_list() == [None, 8, 56, 64]
    d = _all(ds)
    # (96, 128) -> (300, 400) does not fit (224, 256): capped at s = 2 -> (192, 256)
    np.testing.assert_array_equal(d["img_shape"], [[192, 256]] * 4)
    assert d["images"].shape == (4, 224, 256, 3) and d["masks"].shape == (4, 8, 56, 64)
    assert (d["masks"][:, :, 48:] == 0).all()   # the image covers 192/224 of the canvas
    for b, n in zip(*np.nonzero(d["labels"] >= 0)):   # 1/4-resolution masks match boxes
        ys, xs = np.nonzero(d["masks"][b, n])
        if d["ignore"][b, n] or len(xs) == 0:
            continue
        np.testing.assert_allclose(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) * 4,
                                   d["boxes"][b, n], atol=6.0)


def _flip_pair(shapes_small, **kw):
    common = dict(batch_size=4, img_scale=SMALL, with_masks=True, shuffle=False, seed=3,
                  max_instances=10, **kw)
    plain = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir,
                              flip_ratio=0.0, **common))
    flipped = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir,
                                flip_ratio=1.0, **common))
    return plain, flipped


def test_flip_of_image_boxes_and_masks_is_consistent(shapes_small):
    plain, flipped = _flip_pair(shapes_small)
    np.testing.assert_array_equal(plain["image_id"], flipped["image_id"])
    w = plain["img_shape"][:, 1]                         # 256 for every image
    valid = plain["labels"] >= 0
    x1, y1, x2, y2 = np.moveaxis(plain["boxes"], -1, 0)
    expected = np.stack([w[:, None] - x2, y1, w[:, None] - x1, y2], -1)
    np.testing.assert_allclose(flipped["boxes"][valid], expected[valid])
    np.testing.assert_array_equal(flipped["masks"][..., :256], plain["masks"][..., 255::-1])
    np.testing.assert_array_equal(flipped["images"][:, :, :256], plain["images"][:, :, 255::-1])
    for b, n in zip(*np.nonzero(valid)):                 # flipped mask's bbox ~ flipped box
        ys, xs = np.nonzero(flipped["masks"][b, n])
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                                   flipped["boxes"][b, n], atol=2.0)


def test_multiscale_range_and_value(shapes_small):
    scales = [(400, 160), (400, 200)]    # like mstrain [(1333, 640), (1333, 800)], smaller
    kw = dict(batch_size=1, img_scales=scales, flip_ratio=0.0, seed=1, filter_empty_gt=False)
    heights = []
    for _ in range(2):  # two epochs: scales are re-drawn
        d = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir,
                              multiscale_mode="range", **kw))
        heights += d["img_shape"][:, 0].tolist()
        # short edge binds for (96, 128): new_h = short edge, scale_factor follows
        np.testing.assert_allclose(d["scale_factor"][:, 0], d["img_shape"][:, 0] / 96)
    assert min(heights) >= 160 and max(heights) <= 200 and len(set(heights)) >= 8
    d = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir,
                          multiscale_mode="value", **kw))
    assert set(d["img_shape"][:, 0].tolist()) == {160, 200}
    # mmdet config style: Resize(img_scale=[...]) defaults to multiscale_mode='range'
    kw.pop("img_scales")
    d = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir, img_scale=scales,
                          **kw))
    h = d["img_shape"][:, 0]
    assert h.min() >= 160 and h.max() <= 200 and len(set(h.tolist())) >= 4
    # evaluation ignores the multi-scale settings: one scale, the img_scale
    d = _all(coco_dataset(shapes_small.val_ann, shapes_small.image_dir, training=False,
                          img_scale=(400, 180), img_scales=scales, multiscale_mode="range"))
    assert set(d["img_shape"][:, 0].tolist()) == {180}


def test_crowd_is_ignore_and_truncation(tmp_path):
    ann, img_dir = write_coco(str(tmp_path), [{"id": 1, "file_name": "a.png",
                                               "array": solid(40, 40, 90)}], [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 30, 30], "iscrowd": 1},
        {"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]},
    ])
    d = _all(coco_dataset(ann, img_dir, training=False, batch_size=1, img_scale=(40, 40),
                          max_instances=4))
    np.testing.assert_array_equal(d["labels"], [[0, 1, 1, -1]])
    np.testing.assert_array_equal(d["ignore"], [[False, False, True, False]])
    np.testing.assert_array_equal(d["boxes"][0, 2], [0, 0, 30, 30])
    with pytest.warns(UserWarning, match="more than max_instances=2"):
        ds = coco_dataset(ann, img_dir, training=False, batch_size=1, img_scale=(40, 40),
                          max_instances=2)
    np.testing.assert_array_equal(_all(ds)["ignore"], [[False, False]])  # crowd dropped first


def test_empty_images_kept_in_val_dropped_in_training(shapes_small):
    from kdet.data import read_coco
    records, _ = read_coco(shapes_small.train_ann, shapes_small.image_dir)
    non_empty = {r.image_id for r in records if r.num_non_crowd}
    assert len(non_empty) < len(records)   # the fixture has an empty training image
    val = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir, training=False,
                            batch_size=5, img_scale=SMALL))
    assert sorted(val["image_id"]) == sorted(r.image_id for r in records)
    train = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir, batch_size=1,
                              img_scale=SMALL, seed=0))
    assert set(train["image_id"]) == non_empty and len(train["image_id"]) == len(non_empty)
    keep = _all(coco_dataset(shapes_small.train_ann, shapes_small.image_dir, batch_size=1,
                             img_scale=SMALL, seed=0, filter_empty_gt=False))
    assert len(keep["image_id"]) == len(records)


@pytest.mark.parametrize("fmt, mode, tol", [("PNG", None, 0), ("PNG", "RGBA", 0),
                                            ("PNG", "L", 0), ("JPEG", "L", 2),
                                            ("JPEG", None, 3), ("JPEG", "CMYK", 6)])
def test_image_formats_decode_to_rgb(tmp_path, fmt, mode, tol):
    from PIL import Image
    rgb = (200, 100, 50)
    ann, img_dir = _solid_dataset(tmp_path, hw=(32, 48), rgb=rgb, fmt=fmt, mode=mode)
    expected = np.asarray(Image.fromarray(solid(1, 1, rgb)).convert(mode or "RGB")
                          .convert("RGB"), np.float64)[0, 0]
    d = _all(coco_dataset(ann, img_dir, training=False, batch_size=1, img_scale=(48, 32)))
    pixels = _denorm(d["images"][0, :32, :48])
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(0), expected, atol=tol + 0.01)


def test_same_seed_same_batches(shapes_small):
    kw = dict(batch_size=3, img_scales=[(300, 150), (300, 200)], multiscale_mode="range",
              with_masks=True, max_instances=8, num_parallel_calls=4)

    def epochs(seed):
        ds = coco_dataset(shapes_small.train_ann, shapes_small.image_dir, seed=seed, **kw)
        return [_all(ds) for _ in range(2)]
    a, b, c = epochs(7), epochs(7), epochs(8)
    for ea, eb in zip(a, b):
        for k in ea:
            pa, pb = (x if isinstance(x, list) else [x] for x in (ea[k], eb[k]))
            assert len(pa) == len(pb)
            for xa, xb in zip(pa, pb):
                np.testing.assert_array_equal(xa, xb, err_msg=k)
    assert not np.array_equal(a[0]["image_id"], a[1]["image_id"]) or \
        not np.array_equal(a[0]["img_shape"], a[1]["img_shape"])   # epochs differ
    assert not all(np.array_equal(a[0][k], c[0][k]) for k in ("image_id", "img_shape", "boxes"))


def test_corrupt_and_truncated_images_are_skipped(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (24, 24, 3)).astype(np.uint8)
    ann, img_dir = write_coco(str(tmp_path), [
        {"id": i, "file_name": f"{i}.jpg", "fmt": "JPEG", "array": arr} for i in (1, 2, 3)],
        [{"image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in (1, 2, 3)])
    data = open(f"{img_dir}/2.jpg", "rb").read()
    open(f"{img_dir}/2.jpg", "wb").write(data[: len(data) // 2])       # truncated
    open(f"{img_dir}/3.jpg", "wb").write(b"definitely not an image")    # corrupt
    open(f"{img_dir}/1.jpg", "ab").write(b"\0" * 40)                     # padded: still fine
    with pytest.warns(UserWarning) as caught:
        d = _all(coco_dataset(ann, img_dir, training=False, batch_size=2, img_scale=(24, 24)))
    assert d["image_id"].tolist() == [1]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "2.jpg' skipped: truncated" in messages[0]
    assert "3.jpg' skipped: corrupt" in messages[1]
    ds = coco_dataset(ann, img_dir, training=False, batch_size=2, img_scale=(24, 24),
                      strict=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="2.jpg"):
        _all(ds)


@pytest.mark.parametrize("kwargs, match", [
    (dict(style="tf"), "unknown normalisation style"),
    (dict(multiscale_mode="ranges"), "unknown multiscale_mode"),
    (dict(multiscale_mode="range"), "needs img_scales"),
    (dict(multiscale_mode="range", img_scales=[(1, 2), (3, 4), (5, 6)]), "exactly 2"),
    (dict(img_scales=[(1, 2), (3, 4)]), "needs multiscale_mode"),
    (dict(training=False, img_scale=[(400, 160), (400, 200)]), "one scale"),
    (dict(img_scale=(1333,)), "img_scale must be a pair"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8), "would be dropped"),          # 4 val images, training=True
    (dict(flip_ratio=1.5), "flip_ratio"),
    (dict(size_divisor=0), "size_divisor"),
    (dict(max_instances=0), "max_instances"),
    (dict(mask_size=(28, 28), with_masks=True), "needs a fixed pad_to"),
    (dict(pad_to=(-1, 5)), "pad_to"),
])
def test_bad_arguments(shapes_small, kwargs, match):
    with pytest.raises(KdetError, match=match):
        coco_dataset(shapes_small.val_ann, shapes_small.image_dir, **kwargs)


def test_bad_paths(shapes_small, tmp_path):
    with pytest.raises(KdetError, match="annotation file not found"):
        coco_dataset(tmp_path / "missing.json", shapes_small.image_dir)
    with pytest.raises(KdetError, match="image directory not found"):
        coco_dataset(shapes_small.val_ann, tmp_path / "nowhere")
    with pytest.warns(UserWarning, match="image file missing"), \
            pytest.raises(KdetError, match="no usable image"):
        coco_dataset(shapes_small.val_ann, tmp_path)


def test_any_reader_plugs_in(tmp_path):
    """A sibling reader (VOC-like: boxes only, no segmentation) only builds ImageRecords."""
    from kdet.data import ImageRecord, detection_dataset
    write_coco(str(tmp_path), [{"id": 1, "file_name": "v.png", "array": solid(20, 40, 30)}], [])
    rec = ImageRecord(path=str(tmp_path / "img" / "v.png"), image_id=42, height=20, width=40,
                      boxes=np.array([[4, 2, 12, 10], [0, 0, 40, 20]], np.float32),
                      labels=np.array([3, 0], np.int32), iscrowd=np.array([False, True]),
                      segmentations=[None, None])
    d = _all(detection_dataset([rec], training=False, batch_size=1, img_scale=(80, 40),
                               with_masks=True, max_instances=3))
    assert d["image_id"].tolist() == [42] and d["img_shape"].tolist() == [[40, 80]]
    np.testing.assert_array_equal(d["boxes"][0, :2], [[8, 4, 24, 20], [0, 0, 80, 40]])
    np.testing.assert_array_equal(d["ignore"][0], [False, True, False])
    ys, xs = np.nonzero(d["masks"][0, 0])       # no segmentation: the box is the mask
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (8, 4, 24, 20)
