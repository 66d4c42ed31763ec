"""SavedModel export for TF Serving: encoded images in, detections in original pixels out.

The exported graph repeats, in TensorFlow ops, what ``kdet.data.coco_dataset(training=False)``
does to an image (mmdet 2.x test pipeline: ``LoadImageFromFile`` -> ``Resize(keep_ratio)``
-> ``Normalize`` -> ``Pad(size_divisor=32)``), runs the detector and divides the boxes by the
resize factors (mmdet ``bbox / scale_factor``, then clipped to the original image). Everything is
traced under ``kdet.ops.use_implementation("tf")``, so the graph holds only stock TensorFlow ops:
TF Serving, or any process that never imported kdet, loads and runs it.

Signatures (``tf.saved_model.load(path).signatures[name]``):

* ``serving_default(images: tf.string [B])`` -- JPEG / PNG / BMP / GIF bytes (one frame).
* ``predict_pixels(images: tf.uint8 [B, H, W, 3])`` -- decoded RGB pixels, one size per batch.
* ``predict_normalized(images: tf.float32 [B, H, W, 3])`` -- images already resized,
  normalised and padded as the model's ``preprocessing`` says; boxes stay in input pixels.

Outputs (``M = max_per_img``, 100 for the zoo's configs)::

    boxes [B, M, 4] float32 xyxy   scores [B, M] float32   labels [B, M] int32 (-1 = padding)
    num_detections [B] int32       masks [B, M, mh, mw] float32 (Mask R-CNN; box-relative
                                   probabilities, paste them into each box and threshold at 0.5)
"""
import os

import tensorflow as tf

from kdet.errors import KdetError

SIGNATURES = ("serving_default", "predict_pixels", "predict_normalized")
DEFAULT_MAX_IMAGE_SIZE = 8192   # longest side accepted by the image signatures (pixels)


def _preprocessing(model, input_size):
    """(mean, std, to_rgb, (long, short) scale, size_divisor, fixed pad (H, W) or None)."""
    pre = getattr(model, "preprocessing", None)
    if not isinstance(pre, dict):
        raise KdetError(f"{type(model).__name__} has no `preprocessing` dict; export needs a kdet "
                        "detector (kdet.models.*)")
    try:
        mean = [float(v) for v in pre["mean"]]
        std = [float(v) for v in pre["std"]]
        to_rgb = bool(pre["to_rgb"])
        scale = tuple(int(v) for v in pre.get("img_scale", (1333, 800)))
        divisor = int(pre.get("size_divisor", 32))
    except (KeyError, TypeError, ValueError) as e:
        raise KdetError(f"model.preprocessing is incomplete or malformed ({e}): {pre}") from None
    if len(mean) != 3 or len(std) != 3 or len(scale) != 2 or min(scale) < 1 or divisor < 1:
        raise KdetError(f"model.preprocessing is malformed: {pre}")
    fixed = None
    if input_size is not None:
        try:
            fixed = tuple(int(v) for v in input_size)
        except (TypeError, ValueError):
            fixed = ()
        if len(fixed) != 2 or min(fixed) < divisor or any(v % divisor for v in fixed):
            raise KdetError(f"input_size must be (height, width), multiples of size_divisor "
                            f"{divisor}, got {input_size!r}")
    return mean, std, to_rgb, scale, divisor, fixed


class _Exporter(tf.Module):
    """Holds the model (so its variables are saved) and the serving functions."""

    def __init__(self, model, input_size, max_image_size):
        super().__init__(name="kdet_export")
        self.model = model
        (self._mean, self._std, self._to_rgb, self._scale, self._divisor,
         self._fixed) = _preprocessing(model, input_size)
        self._max = int(max_image_size)
        long_, short = max(self._scale), min(self._scale)
        d = self._divisor
        # Every resized image fits a (canvas x canvas) square (either orientation).
        self._canvas = self._fixed or ((long_ + d - 1) // d * d, (long_ + d - 1) // d * d)
        if self._fixed is None and _needs_static_shapes(model):
            self._fixed = self._canvas

    # -- one image ---------------------------------------------------------------------
    def _prepare(self, image):
        """uint8 [h, w, 3] -> (normalised float32 on the canvas, [valid h, w], [sy, sx], [h, w])."""
        from kdet.data.transforms import rescale_size_tf, resize_image
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        tf.debugging.assert_less_equal(
            tf.maximum(h, w), self._max,
            message=f"kdet export: image larger than max_image_size={self._max} pixels")
        tf.debugging.assert_positive(tf.minimum(h, w), message="kdet export: empty image")
        new_h, new_w = rescale_size_tf(h, w, max(self._scale), min(self._scale),
                                       fit_within=self._fixed)
        x = resize_image(image, new_h, new_w)            # RGB float 0..255 (cv2 bilinear)
        if not self._to_rgb:
            x = x[..., ::-1]                              # caffe-style weights expect BGR
        x = (x - tf.constant(self._mean)) / tf.constant(self._std)
        x = tf.pad(x, [[0, self._canvas[0] - new_h], [0, self._canvas[1] - new_w], [0, 0]])
        x = tf.ensure_shape(x, (self._canvas[0], self._canvas[1], 3))
        hw = tf.cast(tf.stack([h, w]), tf.float32)
        valid = tf.cast(tf.stack([new_h, new_w]), tf.float32)
        return x, valid, valid / hw, hw

    def _detect_batch(self, canvases, valid, scale, orig):
        if self._fixed is None:      # crop the canvas to the batch's padded size (mmdet Pad)
            d = self._divisor
            top = tf.cast(tf.reduce_max(valid, axis=0), tf.int32)
            canvases = canvases[:, :(top[0] + d - 1) // d * d, :(top[1] + d - 1) // d * d]
        out = dict(self.model(canvases, training=False, img_shape=valid))
        sy, sx = scale[:, 0], scale[:, 1]
        boxes = out["boxes"] / tf.stack([sx, sy, sx, sy], axis=-1)[:, None, :]
        h, w = orig[:, 0, None], orig[:, 1, None]
        x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
        boxes = tf.stack([tf.clip_by_value(x1, 0.0, w), tf.clip_by_value(y1, 0.0, h),
                          tf.clip_by_value(x2, 0.0, w), tf.clip_by_value(y2, 0.0, h)], -1)
        keep = tf.cast(out["labels"] >= 0, boxes.dtype)[..., None]
        out["boxes"] = boxes * keep
        return _outputs(out)

    def _map(self, fn, elems):
        spec = (tf.TensorSpec(self._canvas + (3,), tf.float32),) + (
            tf.TensorSpec([2], tf.float32),) * 3
        return tf.map_fn(fn, elems, fn_output_signature=spec)

    # -- signatures --------------------------------------------------------------------
    def serve_bytes(self, images):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return self._prepare(tf.ensure_shape(image, (None, None, 3)))
        return self._detect_batch(*self._map(one, images))

    def serve_pixels(self, images):
        return self._detect_batch(*self._map(self._prepare, images))

    def serve_normalized(self, images):
        return _outputs(self.model(images, training=False))


def _needs_static_shapes(model):
    """Two-stage models: RPNHead.get_proposals takes top_k(nms_pre) with a static k when the
    feature size is unknown at trace time, which fails on small levels; give them a fixed
    square canvas (no image is scaled down: it holds the long edge either way)."""
    from kdet.models import TwoStageDetector
    return isinstance(model, TwoStageDetector)


def _outputs(out):
    res = {"boxes": tf.cast(out["boxes"], tf.float32), "scores": tf.cast(out["scores"], tf.float32),
           "labels": tf.cast(out["labels"], tf.int32),
           "num_detections": tf.cast(out["num_detections"], tf.int32)}
    if "masks" in out:
        res["masks"] = tf.cast(out["masks"], tf.float32)
    return res


def export_saved_model(model, path, input_size=None, max_image_size=DEFAULT_MAX_IMAGE_SIZE,
                       signatures=SIGNATURES, overwrite=False):
    """Writes a SavedModel of ``model`` for TF Serving; returns ``path``.

    Args:
      model: a kdet detector (``kdet.models.*``; uses its ``preprocessing`` dict: mean, std,
        to_rgb, img_scale (long, short), size_divisor).
      path: output folder (TF Serving wants ``<model_base_path>/<version>``, e.g. ``.../1``).
      input_size: optional fixed padded (height, width), multiples of size_divisor: every image
        is resized to fit it (static shapes, e.g. for XLA/TPU serving). Default: pad each batch
        to a multiple of size_divisor, as mmdet's test pipeline does; two-stage models (whose
        RPN needs static shapes) get a fixed square canvas of the padded long edge instead.
      max_image_size: the image signatures refuse (InvalidArgumentError naming the limit) an
        image whose longer side exceeds this many pixels.
      signatures: which of :data:`SIGNATURES` to write (``serving_default`` always is; each
        one traces the model once more).
      overwrite: replace an existing non-empty ``path``.

    The signatures and outputs are described in the module docstring; the graph is traced with
    kdet's pure-TF op twins (no custom op), so it loads without kdet.
    """
    from kdet.ops import use_implementation

    path = os.fspath(path)
    if int(max_image_size) < 1:
        raise KdetError(f"max_image_size must be >= 1, got {max_image_size}")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise KdetError(f"{path} exists and is not empty (pass overwrite=True)")
    _preprocessing(model, input_size)       # validates before anything is traced
    if not getattr(model, "built", False):
        raise KdetError("build the model (call it once or load weights) before exporting")
    names = ("serving_default",) + tuple(n for n in signatures if n != "serving_default")
    unknown = [n for n in names if n not in SIGNATURES]
    if unknown:
        raise KdetError(f"unknown signature(s) {unknown}; choose from {list(SIGNATURES)}")
    module = _Exporter(model, input_size, max_image_size)
    fns = {"serving_default": (module.serve_bytes, tf.TensorSpec([None], tf.string, "images")),
           "predict_pixels": (module.serve_pixels,
                              tf.TensorSpec([None, None, None, 3], tf.uint8, "images")),
           "predict_normalized": (module.serve_normalized,
                                  tf.TensorSpec([None, None, None, 3], tf.float32, "images"))}
    traced = {}
    with use_implementation("tf"):
        for name in names:
            fn, spec = fns[name]
            traced[name] = tf.function(fn, input_signature=[spec]).get_concrete_function()
        tf.saved_model.save(module, path, signatures=traced)
    return path


def graph_op_types(path):
    """The set of op types in every function of the SavedModel at ``path`` (no kdet needed)."""
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fspath(path), "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    ops = set()
    for meta in sm.meta_graphs:
        ops.update(n.op for n in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    return ops
