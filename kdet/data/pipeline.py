"""tf.data pipelines: `ImageRecord`s -> batches of (images, padded ground truth).

    records --shuffle--> + per-element seed --parallel map: read, decode, resize, flip,
    normalise, pad, pad gt to N--> padded_batch --> prefetch

Output per batch (DESIGN.md):
  images        [B, H, W, 3] float32, normalised per `style`, zero-padded (after
                normalisation, as MMDetection pads with 0) to a multiple of
                `size_divisor` or to `pad_to`.
  gt["boxes"]   [B, N, 4] float32 xyxy in network-input pixels (resized, maybe flipped).
  gt["labels"]  [B, N] int32, 0..num_classes-1, -1 = padding.
  gt["ignore"]  [B, N] bool, True for crowd objects (ignore regions; label kept).
  gt["masks"]   [B, N, H, W] uint8 (only with_masks; [B, N, h, w] with mask_size).
  gt["image_id"] [B] int64; gt["orig_size"] [B, 2] int32 (h, w of the decoded image);
  gt["img_shape"] [B, 2] int32 (h, w after resize, before padding);
  gt["scale_factor"] [B, 2] float32 (y, x) = resized / original.
N = max_instances. Non-crowd objects come first; beyond N, objects are dropped.
"""
import warnings

import numpy as np
import tensorflow as tf

from kdet.data import transforms as T
from kdet.data.coco import read_coco
from kdet.data.records import decode_masks, filter_records
from kdet.errors import KdetError

AUTOTUNE = tf.data.AUTOTUNE

# Magic bytes and trailers checked before decoding so a bad file is reported by name.
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_MAGIC, _PNG_IEND = b"\x89PNG", b"IEND\xaeB`\x82"


def _records_to_tensors(records):
    """Column tensors (ragged per image) for `Dataset.from_tensor_slices`."""
    counts = np.array([r.num_objects for r in records], np.int64)

    def cat(xs, shape, dt):
        return np.concatenate(xs).astype(dt) if counts.sum() else np.zeros(shape, dt)
    boxes = cat([r.boxes for r in records], (0, 4), np.float32)
    return {
        "index": np.arange(len(records), dtype=np.int64),
        "path": [r.path for r in records],
        "image_id": np.array([r.image_id for r in records], np.int64),
        "boxes": tf.RaggedTensor.from_row_lengths(boxes.reshape(-1, 4), counts),
        "labels": tf.RaggedTensor.from_row_lengths(
            cat([r.labels for r in records], (0,), np.int32), counts),
        "iscrowd": tf.RaggedTensor.from_row_lengths(
            cat([r.iscrowd for r in records], (0,), bool), counts),
    }


def _dense(x):
    return x.to_tensor() if isinstance(x, tf.RaggedTensor) else x


def _warn_skipped(path, reason):
    warnings.warn(f"kdet.data: image {path.numpy().decode()!r} skipped: "
                  f"{reason.numpy().decode()}", UserWarning)


def _tail_has(data, marker, window=256):
    """True where the last `window` bytes of `data` contain `marker` (bytes, 2..8 long)."""
    n = tf.strings.length(data)
    tail = tf.strings.substr(data, tf.maximum(n - window, 0), window)
    raw = tf.io.decode_raw(tail, tf.uint8)
    m = len(marker)
    length = tf.shape(raw)[0] - m + 1
    hit = tf.ones([tf.maximum(length, 0)], tf.bool)
    for i, byte in enumerate(marker):
        hit = tf.logical_and(hit, tf.equal(raw[i:i + tf.maximum(length, 0)], byte))
    return tf.reduce_any(hit)


def _check_encoded(data):
    """(ok, reason): a known image format whose end marker is present (not truncated).

    JPEG must hold its EOI (FF D9) and PNG its IEND chunk within the last 256 bytes
    (some writers pad after EOI)."""
    head = tf.strings.substr(data, 0, 4)
    is_jpeg = tf.strings.substr(head, 0, 2) == _JPEG_SOI
    is_png = head == _PNG_MAGIC
    is_other = tf.logical_or(tf.strings.substr(head, 0, 3) == b"GIF",
                             tf.strings.substr(head, 0, 2) == b"BM")
    known = tf.logical_and(tf.logical_or(tf.logical_or(is_jpeg, is_png), is_other),
                           tf.strings.length(data) > 16)
    complete = tf.logical_and(
        tf.logical_or(tf.logical_not(is_jpeg), _tail_has(data, _JPEG_EOI)),
        tf.logical_or(tf.logical_not(is_png), _tail_has(data, _PNG_IEND)))
    ok = tf.logical_and(known, complete)
    reason = tf.where(known, "truncated image file (no end marker)",
                      "corrupt image file (not a JPEG/PNG/GIF/BMP)")
    return ok, reason


def _decode_image(path, strict):
    """Reads and decodes a JPEG/PNG/BMP/GIF file -> (RGB uint8 [H, W, 3], ok).

    Grayscale, RGBA and CMYK JPEGs become 3-channel RGB (libjpeg converts CMYK). A file of
    unknown format or without its end marker (truncated) gives ok=False and one Python
    warning naming it (strict: an InvalidArgumentError naming it).
    """
    data = tf.io.read_file(path)
    ok, reason = _check_encoded(data)
    if strict:
        with tf.control_dependencies([tf.debugging.Assert(ok, [path, reason])]):
            data = tf.identity(data)

    def bad():
        with tf.control_dependencies([tf.py_function(_warn_skipped, [path, reason], [])]):
            return tf.zeros([1, 1, 3], tf.uint8)

    def good():
        img = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return tf.reshape(img, [tf.shape(img)[0], tf.shape(img)[1], 3])
    image = tf.cond(ok, good, bad)
    image.set_shape([None, None, 3])
    return image, ok


def _is_ok(image, gt, ok):
    return ok


def _drop_ok(image, gt, ok):
    return image, gt


class _Loader:
    """The per-image map function (a class so its options are explicit)."""

    def __init__(self, records, training, img_scales, multiscale_mode, flip_ratio, style,
                 size_divisor, pad_to, max_instances, with_masks, mask_size, strict):
        self.records = records
        self.training = training
        self.img_scales = img_scales
        self.multiscale_mode = multiscale_mode if training else None
        self.flip_ratio = float(flip_ratio) if training else 0.0
        self.style = style
        self.size_divisor = size_divisor
        self.pad_to = pad_to
        self.max_instances = max_instances
        self.with_masks = with_masks
        self.mask_size = mask_size
        self.strict = strict

    def _masks(self, index):
        def fn(i):
            return decode_masks(self.records[int(i)])
        masks = tf.numpy_function(fn, [index], tf.uint8, stateful=False)
        masks.set_shape([None, None, None])
        return masks

    def _resized_masks(self, index, new_h, new_w):
        """Masks resized like the image: uint8 [n, new_h, new_w] (cv2-nearest, as mmdet),
        or with `mask_size` (h, w) for the padded canvas `pad_to`, the image part of that
        grid, [n, round(new_h * h / H), round(new_w * w / W)] (antialiased bilinear,
        thresholded at 0.5). Returns (masks, canvas size or None)."""
        raw = self._masks(index)
        if self.mask_size is None:
            return T.resize_masks(raw, new_h, new_w), None
        (mh, mw), (ph, pw) = self.mask_size, self.pad_to
        th = tf.maximum(tf.cast(tf.round(new_h * mh / ph), tf.int32), 1)
        tw = tf.maximum(tf.cast(tf.round(new_w * mw / pw), tf.int32), 1)
        small = tf.image.resize(tf.cast(raw[..., None], tf.float32), tf.stack([th, tw]),
                                method="bilinear", antialias=True)
        return tf.cast(small[..., 0] >= 0.5, tf.uint8), (mh, mw)

    def __call__(self, elem, rand):
        seed = tf.stack([tf.cast(rand, tf.int64), tf.constant(0, tf.int64)])
        image, ok = _decode_image(elem["path"], self.strict)
        boxes = tf.reshape(_dense(elem["boxes"]), [-1, 4])
        labels = tf.reshape(_dense(elem["labels"]), [-1])
        ignore = tf.reshape(_dense(elem["iscrowd"]), [-1])
        h, w = tf.shape(image)[0], tf.shape(image)[1]

        # Resize (keep ratio) -- mmdet Resize(img_scale, multiscale_mode, keep_ratio=True).
        long_edge, short_edge = T.sample_scale(seed, self.img_scales, self.multiscale_mode)
        new_h, new_w = T.rescale_size_tf(h, w, long_edge, short_edge, fit_within=self.pad_to)
        sy = tf.cast(new_h, tf.float32) / tf.cast(h, tf.float32)
        sx = tf.cast(new_w, tf.float32) / tf.cast(w, tf.float32)
        image = T.resize_image(image, new_h, new_w)
        boxes = T.resize_boxes(boxes, sy, sx, new_h, new_w)
        if self.with_masks:
            masks, canvas = self._resized_masks(elem["index"], new_h, new_w)

        # RandomFlip(flip_ratio), horizontal.
        if self.flip_ratio > 0:
            flip = tf.random.stateless_uniform([], seed + 7) < self.flip_ratio
            image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
            boxes = tf.cond(flip, lambda: T.flip_boxes_horizontal(boxes, new_w), lambda: boxes)
            if self.with_masks:
                masks = tf.cond(flip, lambda: masks[:, :, ::-1], lambda: masks)

        # Normalize, then Pad with 0.
        image = T.normalize_image(image, self.style)
        if self.pad_to is not None:
            ph, pw = self.pad_to
        else:
            ph, pw = T.padded_size(new_h, new_w, self.size_divisor)
        image = T.pad_bottom_right(image, ph, pw)
        if self.pad_to is not None:
            image.set_shape([ph, pw, 3])

        # Ground truth padded to N = max_instances.
        n = tf.minimum(tf.shape(labels)[0], self.max_instances)
        pad_n = self.max_instances - n
        gt = {
            "boxes": tf.pad(boxes[:n], [[0, pad_n], [0, 0]]),
            "labels": tf.pad(labels[:n], [[0, pad_n]], constant_values=-1),
            "ignore": tf.pad(ignore[:n], [[0, pad_n]]),
            "image_id": elem["image_id"],
            "orig_size": tf.stack([h, w]),
            "img_shape": tf.stack([new_h, new_w]),
            "scale_factor": tf.stack([sy, sx]),
        }
        gt["boxes"].set_shape([self.max_instances, 4])
        gt["labels"].set_shape([self.max_instances])
        gt["ignore"].set_shape([self.max_instances])
        if self.with_masks:
            mh, mw = canvas or (ph, pw)
            masks = T.pad_bottom_right(masks[:n], mh, mw, spatial_axes=(1, 2))
            masks = tf.pad(masks, [[0, pad_n], [0, 0], [0, 0]])
            static = canvas or self.pad_to or (None, None)
            masks.set_shape([self.max_instances, *static])
            gt["masks"] = masks
        return image, gt, ok


def _check_args(training, batch_size, img_scale, multiscale_mode, img_scales, flip_ratio,
                style, size_divisor, pad_to, max_instances, mask_size, with_masks):
    """Validates the arguments; returns (scales for the loader, mode, pad_to, mask_size)."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise KdetError(f"batch_size must be a positive integer, got {batch_size!r}")
    T.normalization(style)
    if multiscale_mode not in (None, "range", "value"):
        raise KdetError(f"unknown multiscale_mode {multiscale_mode!r}; expected None, "
                        "'range' or 'value'")
    if isinstance(img_scale, list) and img_scale and \
            all(isinstance(s, (list, tuple)) for s in img_scale):
        # mmdet style Resize(img_scale=[(1333, 640), (1333, 800)], multiscale_mode='range')
        if img_scales is not None:
            raise KdetError("give several scales either as img_scale=[...] or as img_scales")
        if len(img_scale) == 1:
            img_scale = img_scale[0]
        else:
            img_scale, img_scales = None, img_scale
            multiscale_mode = multiscale_mode or "range"   # mmdet Resize's default
    if img_scales and multiscale_mode is None:
        raise KdetError("img_scales needs multiscale_mode='range' or 'value'")
    if img_scale is None:
        if not training:
            raise KdetError("training=False resizes to one scale: pass img_scale=(long, short)")
    else:
        img_scale = T.check_img_scale(img_scale)
    if multiscale_mode is None:
        scales = [img_scale]
    else:
        if not img_scales:
            raise KdetError(f"multiscale_mode={multiscale_mode!r} needs img_scales, e.g. "
                            "[(1333, 640), (1333, 800)]")
        scales = [T.check_img_scale(s, "img_scales entry") for s in img_scales]
        if multiscale_mode == "range" and len(scales) != 2:
            raise KdetError("multiscale_mode='range' needs exactly 2 img_scales (the bounds), "
                            f"got {len(scales)}")
        if not training:  # test pipelines resize to the single img_scale
            scales, multiscale_mode = [img_scale], None
    if not 0.0 <= float(flip_ratio) <= 1.0:
        raise KdetError(f"flip_ratio must be in [0, 1], got {flip_ratio!r}")
    if not isinstance(size_divisor, (int, np.integer)) or size_divisor < 1:
        raise KdetError(f"size_divisor must be a positive integer, got {size_divisor!r}")
    if pad_to is not None:
        pad_to = T.check_img_scale(pad_to, "pad_to")
    if not isinstance(max_instances, (int, np.integer)) or max_instances < 1:
        raise KdetError(f"max_instances must be a positive integer, got {max_instances!r}")
    if mask_size is not None:
        if not with_masks:
            raise KdetError("mask_size is only meaningful with with_masks=True")
        if pad_to is None:
            raise KdetError("mask_size needs a fixed pad_to (masks are resized from the "
                            "padded canvas, which must be the same for every image)")
        mask_size = T.check_img_scale(mask_size, "mask_size")
    return scales, multiscale_mode, pad_to, mask_size


def detection_dataset(records, training=True, batch_size=2, img_scale=(1333, 800),
                      multiscale_mode=None, img_scales=None, flip_ratio=0.5, style="pytorch",
                      size_divisor=32, pad_to=None, max_instances=100, with_masks=False,
                      mask_size=None, filter_empty_gt=None, shuffle=None, seed=None,
                      deterministic=None, num_parallel_calls=AUTOTUNE, drop_remainder=None,
                      prefetch=AUTOTUNE, strict=False):
    """Batches (images, gt) from reader records (any reader: see records.py).

    See `coco_dataset` for the arguments and the module docstring for the output.
    """
    training = bool(training)
    scales, multiscale_mode, pad_to, mask_size = _check_args(
        training, batch_size, img_scale, multiscale_mode, img_scales, flip_ratio, style,
        size_divisor, pad_to, max_instances, mask_size, with_masks)
    filter_empty_gt = training if filter_empty_gt is None else bool(filter_empty_gt)
    shuffle = training if shuffle is None else bool(shuffle)
    deterministic = (seed is not None or not training) if deterministic is None \
        else bool(deterministic)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)

    records = filter_records(records, filter_empty_gt)
    if not records:
        raise KdetError("no image left after filtering images without objects "
                        "(filter_empty_gt=True)")
    if drop_remainder and len(records) < batch_size:
        raise KdetError(f"only {len(records)} usable image(s) but batch_size={batch_size} with "
                        "drop_remainder: every batch would be dropped")
    too_many = [r for r in records if r.num_objects > max_instances]
    if too_many:
        warnings.warn(f"{len(too_many)} image(s) have more than max_instances={max_instances} "
                      f"objects (e.g. image id {too_many[0].image_id}); the extra ones "
                      "(crowd first) are dropped", UserWarning, stacklevel=3)

    ds = tf.data.Dataset.from_tensor_slices(_records_to_tensors(records))
    if shuffle:
        ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    # One random int64 per element drives all its random choices (stateless ops), so
    # the same seed gives the same batches whatever the parallelism.
    rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, rand))
    loader = _Loader(records, training, scales, multiscale_mode, flip_ratio, style,
                     size_divisor, pad_to, max_instances, with_masks, mask_size, strict)
    ds = ds.map(loader, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.filter(_is_ok).map(_drop_ok)
    if not strict:  # last resort for other decode failures (logged by TF, not raised)
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    if prefetch:
        ds = ds.prefetch(prefetch)
    return ds


def coco_dataset(ann_file, image_dir, training=True, batch_size=2, img_scale=(1333, 800),
                 multiscale_mode=None, img_scales=None, flip_ratio=0.5, style="pytorch",
                 size_divisor=32, pad_to=None, max_instances=100, with_masks=False,
                 mask_size=None, filter_empty_gt=None, shuffle=None, seed=None,
                 deterministic=None, num_parallel_calls=AUTOTUNE, drop_remainder=None,
                 prefetch=AUTOTUNE, strict=False, return_info=False):
    """A `tf.data.Dataset` of (images, gt) batches over a COCO-format folder.

    Args:
      ann_file, image_dir: instances json and the folder its `file_name`s are relative to.
      training: True -> random flip / multi-scale, shuffle, drop empty images and the last
        partial batch; False -> one scale, no flip, every image in id order.
      batch_size: images per batch.
      img_scale: (long, short) edge bound of the keep-ratio resize, mmdet's (1333, 800).
        A list of scales, as in mmdet configs, means `img_scales=` that list (training).
      multiscale_mode: None, 'range' or 'value' (training only) over `img_scales`, e.g.
        [(1333, 640), (1333, 800)] as the seeds' mstrain configs; evaluation uses
        `img_scale`.
      flip_ratio: probability of a horizontal flip in training (mmdet 0.5).
      style: 'pytorch' (RGB, mean/std) or 'caffe' (BGR, mean, std 1).
      size_divisor: pad H, W up to a multiple of this (mmdet 32); ignored with `pad_to`.
      pad_to: fixed (H, W) to pad every image to: static shapes for XLA / TPUs. Images are
        also scaled down if needed so they fit, e.g. (1344, 1344) fits both orientations
        of (1333, 800).
      max_instances: N, the padded number of objects per image.
      with_masks: add gt["masks"] (pycocotools decodes polygons and RLE).
      mask_size: optional (h, w) grid for masks covering the padded canvas `pad_to` (needs
        it), e.g. pad_to / 4: masks [B, N, h, w] cost 16x less memory.
      filter_empty_gt: drop images without a non-crowd object; default = training.
      shuffle: default = training. seed: makes shuffle, flips and scales reproducible.
      deterministic: keep element order under parallel map; default = seed given or not
        training.
      num_parallel_calls: parallel decodes (AUTOTUNE). drop_remainder: default = training.
      prefetch: batches prefetched (AUTOTUNE; 0/None for none).
      strict: raise on the first bad sample (missing/corrupt image, bad annotation) instead
        of skipping it with a warning.
      return_info: also return the `DatasetInfo` (class names, category-id map).

    Returns:
      the dataset, or (dataset, info) with `return_info=True`.
    """
    records, info = read_coco(ann_file, image_dir, strict=strict)
    ds = detection_dataset(
        records, training=training, batch_size=batch_size, img_scale=img_scale,
        multiscale_mode=multiscale_mode, img_scales=img_scales, flip_ratio=flip_ratio,
        style=style, size_divisor=size_divisor, pad_to=pad_to, max_instances=max_instances,
        with_masks=with_masks, mask_size=mask_size, filter_empty_gt=filter_empty_gt,
        shuffle=shuffle, seed=seed, deterministic=deterministic,
        num_parallel_calls=num_parallel_calls, drop_remainder=drop_remainder,
        prefetch=prefetch, strict=strict)
    return (ds, info) if return_info else ds
