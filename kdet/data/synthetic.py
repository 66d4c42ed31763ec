"""A synthetic COCO-format dataset: coloured circles, squares and triangles.

Layout written by `make_shapes_dataset(out_dir, ...)`::

    out_dir/images/000001.jpg ...            JPEG images, ids 1..num_images
    out_dir/annotations/instances_train.json  the first images
    out_dir/annotations/instances_val.json    the last round(num_images * val_fraction)

Each image has a textured background (noise, gradient or stripes) and 0..max_objects
shapes of random colour drawn in order, so later shapes occlude earlier ones. Like COCO,
an annotation describes the *visible* part: `segmentation` is a polygon list (the exact
shape polygon when unoccluded, else the pixel-boundary polygons of what is visible),
`bbox` [x, y, w, h] and `area` are those of the rasterised polygons (pycocotools), so
`annToMask` reproduces the drawn pixels exactly. Sizes span COCO's small / medium / large
classes (area < 32**2, < 96**2, larger; pycocotools COCOeval areaRng). A few objects are
crowds (a cluster of small shapes of one class, `iscrowd` = 1, uncompressed RLE, as COCO
stores crowds) and some images have no object. Same seed -> identical files.
"""
import collections
import json
import math
import os

import numpy as np

from kdet.errors import KdetError

CATEGORIES = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
# COCO area thresholds (pycocotools COCOeval Params.areaRng): small < 32^2 <= medium < 96^2.
_SMALL, _MEDIUM = 32 ** 2, 96 ** 2
_MIN_AREA = 48            # smallest shape drawn, px
_MIN_VISIBLE = 0.3        # an occluded object keeps at least this fraction visible

ShapesDataset = collections.namedtuple(
    "ShapesDataset", "root image_dir train_ann val_ann num_train num_val num_objects num_crowd "
    "num_empty")


def shapes_paths(out_dir):
    """Paths of a dataset written by `make_shapes_dataset`:
    {"image_dir", "train_ann", "val_ann"} (for `coco_dataset(ann_file, image_dir)`)."""
    out_dir = os.fspath(out_dir)
    return {
        "image_dir": os.path.join(out_dir, "images"),
        "train_ann": os.path.join(out_dir, "annotations", "instances_train.json"),
        "val_ann": os.path.join(out_dir, "annotations", "instances_val.json"),
    }


# ---------------------------------------------------------------- rasterising and tracing

def _rasterize(polys, height, width):
    """Polygons (flat xy lists) -> bool [h, w] via pycocotools (as annToMask)."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polys],
                                                  height, width))
    return mask_utils.decode(rle).astype(bool)


def _trace_outer(padded, r0, c0):
    """Outer boundary, along pixel edges, of the 4-connected component holding pixel
    (r0, c0), its topmost-leftmost pixel. `padded` is the mask with a 1-px zero border.
    Returns a flat [x0, y0, x1, y1, ...] list of corner coordinates (pixel (r, c) spans
    [c, c+1] x [r, r+1]), walking with the region on the right."""
    dx, dy = (1, 0, -1, 0), (0, 1, 0, -1)   # east, south, west, north; d+1 = turn right
    x, y, d = c0, r0, 0
    pts = [x, y]
    m = padded
    for _ in range(4 * padded.size):
        # pixels ahead-right / ahead-left of corner (x, y) for heading d (padded indices)
        if d == 0:
            ar, al = m[y + 1, x + 1], m[y, x + 1]
        elif d == 1:
            ar, al = m[y + 1, x], m[y + 1, x + 1]
        elif d == 2:
            ar, al = m[y, x], m[y + 1, x]
        else:
            ar, al = m[y, x + 1], m[y, x]
        nd = (d + 1) % 4 if not ar else ((d - 1) % 4 if al else d)
        if nd != d and (x, y) != (c0, r0):
            pts += [x, y]
        d = nd
        x, y = x + dx[d], y + dy[d]
        if (x, y) == (c0, r0):
            return pts
    raise RuntimeError("boundary tracing did not close")  # unreachable for a valid mask


def mask_to_polygons(mask):
    """Exact polygon list of a bool mask [h, w], or None if it has a hole (COCO polygons
    cannot express holes). `_rasterize(result)` equals `mask`."""
    h, w = mask.shape
    remaining = mask.astype(bool).copy()
    polys = []
    while remaining.any():
        r, c = divmod(int(np.flatnonzero(remaining)[0]), w)
        poly = _trace_outer(np.pad(remaining, 1), r, c)
        filled = _rasterize([poly], h, w)
        if not filled[r, c] or (filled & ~remaining).any():
            return None
        remaining &= ~filled
        polys.append(poly)
    return polys


def _uncompressed_rle(mask):
    """COCO uncompressed RLE {"counts", "size"} of a bool mask (column-major, 0s first)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


# ------------------------------------------------------------------------- drawing

def _background(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, math.pi)
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == 0:      # noise
        img = c0 + rng.normal(0, 25, (h, w, 3))
    elif kind == 1:    # linear gradient
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None] + rng.normal(0, 6, (h, w, 3))
    else:              # stripes
        period = rng.uniform(8, 32)
        t = (np.floor(proj / (period / 2)) % 2)[..., None]
        img = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (h, w, 3))
    return img.astype(np.float32)


def _shape_polygon(rng, category, area, h, w):
    """A shape of `category` (1 circle, 2 square, 3 triangle) with about `area` px, fully
    inside the image. Returns a flat polygon [x0, y0, ...]."""
    if category == 1:
        radius = math.sqrt(area / math.pi)
        n = int(np.clip(2 * math.pi * radius / 3, 12, 48))
        angles = np.arange(n) * 2 * math.pi / n
        extent = radius
        pts = np.stack([np.cos(angles), np.sin(angles)], 1) * radius
    elif category == 2:
        side = math.sqrt(area)
        extent = side / math.sqrt(2)
        phi = rng.uniform(0, math.pi / 2)
        angles = phi + np.arange(4) * math.pi / 2 + math.pi / 4
        pts = np.stack([np.cos(angles), np.sin(angles)], 1) * extent
    else:
        side = math.sqrt(4 * area / math.sqrt(3))
        extent = side / math.sqrt(3)
        phi = rng.uniform(0, 2 * math.pi)
        angles = phi + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([np.cos(angles), np.sin(angles)], 1) * extent
    cx = rng.uniform(extent, max(w - extent, extent + 1e-3))
    cy = rng.uniform(extent, max(h - extent, extent + 1e-3))
    pts = pts + [cx, cy]
    pts[:, 0] = np.clip(pts[:, 0], 0, w)
    pts[:, 1] = np.clip(pts[:, 1], 0, h)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def _sample_area(rng, h, w):
    """An area from a uniformly chosen feasible COCO size class (log-uniform inside it)."""
    largest = min(0.3 * h * w, (0.8 * min(h, w)) ** 2)
    ranges = [(lo, min(hi, largest)) for lo, hi in
              ((_MIN_AREA, _SMALL), (_SMALL, _MEDIUM), (_MEDIUM, float("inf")))]
    ranges = [(lo, hi) for lo, hi in ranges if hi > lo]
    lo, hi = ranges[rng.integers(len(ranges))]
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _propose(rng, h, w, crowd):
    """(category, full bool mask, analytic polygon or None) for one new object."""
    category = int(rng.integers(1, len(CATEGORIES) + 1))
    if not crowd:
        poly = _shape_polygon(rng, category, _sample_area(rng, h, w), h, w)
        return category, _rasterize([poly], h, w), poly
    # A crowd: 4..8 small shapes of one class close together, annotated as one region.
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    spread = 0.12 * min(h, w)
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(4, 9))):
        poly = _shape_polygon(rng, category, rng.uniform(_MIN_AREA, 4 * _MIN_AREA), h, w)
        pts = np.asarray(poly).reshape(-1, 2)
        pts += np.array([cx, cy]) + rng.normal(0, spread, 2) - pts.mean(0)
        pts[:, 0] = np.clip(pts[:, 0], 0, w)
        pts[:, 1] = np.clip(pts[:, 1], 0, h)
        mask |= _rasterize([pts.reshape(-1).tolist()], h, w)
    return category, mask, None


def _layout(rng, h, w, num_objects, first_is_crowd, crowd_fraction):
    """Places objects so every one keeps >= _MIN_VISIBLE of itself visible and no visible
    region has a hole. Returns a list of dicts (category, full, visible, polys, crowd)."""
    objs = []
    for k in range(num_objects):
        crowd = (k == 0 and first_is_crowd) or (rng.uniform() < crowd_fraction)
        for _ in range(12):  # a few attempts, else the object is left out
            category, full, poly = _propose(rng, h, w, crowd)
            if full.sum() < 16:
                continue
            updated, ok = [], True
            for o in objs:
                vis = o["visible"] & ~full
                if vis.sum() < max(16, _MIN_VISIBLE * o["full"].sum()):
                    ok = False
                    break
                polys = o["polys"]
                if not o["crowd"] and (vis != o["visible"]).any():
                    polys = mask_to_polygons(vis)
                    if polys is None:
                        ok = False
                        break
                updated.append(dict(o, visible=vis, polys=polys))
            if ok:
                objs = updated + [dict(category=category, full=full, visible=full,
                                       polys=None if crowd else [poly], crowd=crowd)]
                break
    return objs


def _draw(rng, h, w, objs):
    img = _background(rng, h, w)
    for o in objs:  # in order: later shapes cover earlier ones
        bg_mean = img[o["full"]].mean(0)
        for _ in range(10):
            colour = rng.uniform(0, 255, 3)
            if np.linalg.norm(colour - bg_mean) > 90:
                break
        shade = rng.normal(0, 5, (int(o["full"].sum()), 3))
        img[o["full"]] = colour + shade
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _annotations(objs, image_id, next_ann_id):
    from pycocotools import mask as mask_utils
    anns = []
    for o in objs:
        vis = o["visible"]
        rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
        x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
        seg = _uncompressed_rle(vis) if o["crowd"] else o["polys"]
        anns.append({
            "id": next_ann_id + len(anns), "image_id": image_id,
            "category_id": o["category"], "bbox": [x, y, bw, bh],
            "area": float(mask_utils.area(rle)), "segmentation": seg,
            "iscrowd": int(o["crowd"]),
        })
    return anns


def _split_sizes(num_images, val_fraction):
    num_val = int(round(num_images * val_fraction))
    if val_fraction > 0 and num_images >= 2:
        num_val = max(num_val, 1)
    num_val = min(num_val, num_images - 1)
    return num_images - num_val, num_val


def make_shapes_dataset(out_dir, num_images=200, image_size=256, seed=0, val_fraction=0.2,
                        max_objects=6, empty_fraction=0.08, crowd_fraction=0.04,
                        jpeg_quality=90):
    """Writes the synthetic shapes dataset (layout in the module docstring).

    Args:
      out_dir: folder to write (created; existing files of the same names are replaced).
      num_images: total images (>= 1); ids 1..num_images.
      image_size: int (square) or (height, width) in pixels, each >= 32.
      seed: everything (layout, colours, split of empty images) follows from it.
      val_fraction: share of images (the last ids) in instances_val.json.
      max_objects: at most this many objects per non-empty image (>= 1).
      empty_fraction: share of images with no object (at least one per split of >= 2).
      crowd_fraction: chance that an object is a crowd (at least one crowd per split).
      jpeg_quality: Pillow JPEG quality.

    Returns:
      ShapesDataset(root, image_dir, train_ann, val_ann, num_train, num_val, num_objects,
      num_crowd, num_empty).
    """
    from PIL import Image
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise KdetError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(h, w) < 32:
        raise KdetError(f"image_size must be at least 32 pixels, got {image_size!r}")
    if int(num_images) < 1:
        raise KdetError(f"num_images must be >= 1, got {num_images!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise KdetError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if int(max_objects) < 1:
        raise KdetError(f"max_objects must be >= 1, got {max_objects!r}")
    num_images = int(num_images)
    paths = shapes_paths(out_dir)
    os.makedirs(paths["image_dir"], exist_ok=True)
    os.makedirs(os.path.dirname(paths["train_ann"]), exist_ok=True)

    num_train, num_val = _split_sizes(num_images, float(val_fraction))
    splits = {"train": list(range(1, num_train + 1)),
              "val": list(range(num_train + 1, num_images + 1))}
    master = np.random.default_rng([int(seed), 0])
    empty, first_crowd = set(), set()
    for ids in splits.values():
        n_empty = int(round(empty_fraction * len(ids)))
        if empty_fraction > 0 and len(ids) >= 2:
            n_empty = max(n_empty, 1)
        empty |= set(master.choice(ids, size=min(n_empty, len(ids) - 1), replace=False)
                     .tolist()) if ids else set()
        rest = [i for i in ids if i not in empty]
        if crowd_fraction > 0 and rest:
            first_crowd.add(rest[0])

    per_split = {name: {"images": [], "annotations": []} for name in splits}
    totals = collections.Counter()
    for name, ids in splits.items():
        for image_id in ids:
            rng = np.random.default_rng([int(seed), image_id])
            n_obj = 0 if image_id in empty else int(rng.integers(1, int(max_objects) + 1))
            objs = _layout(rng, h, w, n_obj, image_id in first_crowd, float(crowd_fraction))
            img = _draw(rng, h, w, objs)
            file_name = f"{image_id:06d}.jpg"
            Image.fromarray(img).save(os.path.join(paths["image_dir"], file_name),
                                      quality=int(jpeg_quality))
            per_split[name]["images"].append(
                {"id": image_id, "file_name": file_name, "height": h, "width": w})
            anns = _annotations(objs, image_id, next_ann_id=image_id * 100)
            per_split[name]["annotations"] += anns
            totals["objects"] += len(anns)
            totals["crowd"] += sum(a["iscrowd"] for a in anns)
            totals["empty"] += not anns

    for name, ann_key in (("train", "train_ann"), ("val", "val_ann")):
        doc = {
            "info": {"description": "kdet synthetic shapes", "seed": int(seed),
                     "version": "1.0"},
            "licenses": [],
            "images": per_split[name]["images"],
            "annotations": per_split[name]["annotations"],
            "categories": [dict(c) for c in CATEGORIES],
        }
        with open(paths[ann_key], "w") as f:
            json.dump(doc, f, separators=(",", ":"))
    return ShapesDataset(root=os.fspath(out_dir), image_dir=paths["image_dir"],
                         train_ann=paths["train_ann"], val_ann=paths["val_ann"],
                         num_train=num_train, num_val=num_val, num_objects=totals["objects"],
                         num_crowd=totals["crowd"], num_empty=totals["empty"])
