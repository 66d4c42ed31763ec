"""``BaseDenseHead``: the base of every dense (per-location) head -- RPN, RetinaNet, ATSS,
PAA, ... -- with MMDetection v2's split into a few override hooks, so that a new
single-stage method is one file that overrides only what differs.

The flow, and the hook a subclass overrides at each step::

    outputs = head(features)                  # forward / forward_single: per-level maps
    losses  = head.loss(outputs, gt, img_shape)
                # -> get_anchors -> get_targets (assign / sample) -> loss_by_feat
    dets    = head.predict(outputs, img_shape)
                # -> get_candidates (per-level top-k + decode) -> post_process (NMS)

Shapes: ``features`` is a list of L NHWC maps ``[B, H_l, W_l, C_in]``; ``outputs`` a dict of
per-level lists (e.g. ``{"cls_scores": [[B, H_l, W_l, A*C]], "bbox_preds": [[B, H_l, W_l,
A*4]]}``); ``img_shape`` is ``[B, 2]`` (valid height, width of every image before batch
padding) or None (the whole padded input is valid). Detections are DESIGN.md's padded dict.

Everything keeps static shapes (top-k and masks instead of boolean indexing), so both the loss
and the post-processing compile under XLA.
"""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.ops.nms import batched_nms_padded

# MMDetection v2 test_cfg of the single-stage COCO configs (retinanet_r50_fpn_1x_coco.py).
DEFAULT_TEST_CFG = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)


def flatten_levels(maps, channels):
    """Per-level NHWC maps -> one ``[B, sum_l H_l * W_l * A, channels]`` tensor.

    ``maps[l]`` is ``[B, H_l, W_l, A * channels]``; the order (location-major, row-major,
    then anchor) is MMDetection's ``permute(0, 2, 3, 1).reshape(B, -1, channels)`` and the
    order of :class:`kdet.core.AnchorGenerator`.
    """
    return tf.concat([flatten_level(m, channels) for m in maps], axis=1)


def flatten_level(x, channels):
    """One level: ``[B, H, W, A * channels]`` -> ``[B, H * W * A, channels]`` float32."""
    x = tf.cast(x, tf.float32)
    b = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    return tf.reshape(x, [b, -1, channels])


def featmap_sizes(maps):
    """(H, W) of each NHWC map: Python ints when static, else scalar tensors."""
    out = []
    for m in maps:
        h = m.shape[1] if m.shape[1] is not None else tf.shape(m)[1]
        w = m.shape[2] if m.shape[2] is not None else tf.shape(m)[2]
        out.append((h, w))
    return out


def topk_pairs(scores, k, score_thr):
    """MMDetection v2's ``filter_scores_and_topk`` with static shapes.

    Keeps the ``k`` highest (location, class) pairs of ``scores`` [B, N, C]; pairs at or below
    ``score_thr`` are marked invalid instead of removed.

    Returns:
        (scores [B, k'], location index [B, k'] int32 into N, class [B, k'] int32 with -1 for
        invalid pairs), ``k' = min(k, N * C)``.
    """
    c = scores.shape[-1]
    b = scores.shape[0] if scores.shape[0] is not None else tf.shape(scores)[0]
    flat = tf.reshape(scores, [b, -1])
    n = flat.shape[1]
    kk = min(int(k), int(n)) if (n is not None and k > 0) else (
        tf.minimum(int(k), tf.shape(flat)[1]) if k > 0 else tf.shape(flat)[1])
    vals, idx = tf.math.top_k(flat, k=kk)
    labels = tf.where(vals > score_thr, idx % c, -1)
    return vals, idx // c, labels


def multiclass_nms(boxes, scores, labels, iou_threshold, max_per_img, groups=None):
    """Class-aware padded NMS (mmcv ``batched_nms``) and the padded detections dict.

    Args:
        boxes: [B, K, 4] xyxy candidates. scores: [B, K]. labels: [B, K] int32, -1 = invalid.
        iou_threshold: suppress when IoU > this within a group.
        max_per_img: Python int, detections kept per image.
        groups: [B, K] int32 NMS groups (default: ``labels``; RPN uses the level id).
    Returns:
        (dict ``boxes [B, M, 4]``, ``scores [B, M]`` (0 pad), ``labels [B, M]`` (-1 pad),
        ``num_detections [B]``; and the kept indices [B, M] into K, -1 padded).
    """
    groups = labels if groups is None else tf.where(labels >= 0, groups, -1)
    keep, num = batched_nms_padded(boxes, scores, groups, int(max_per_img), float(iou_threshold))
    valid = keep >= 0
    safe = tf.maximum(keep, 0)
    dets = {
        "boxes": tf.where(valid[..., None], tf.gather(boxes, safe, batch_dims=1), 0.0),
        "scores": tf.where(valid, tf.gather(scores, safe, batch_dims=1), 0.0),
        "labels": tf.where(valid, tf.gather(labels, safe, batch_dims=1), -1),
        "num_detections": num,
    }
    return dets, keep


def build_object(obj, cls):
    """``obj`` when it is already a ``cls``; else ``cls(**obj)`` (a config dict)."""
    if obj is None or isinstance(obj, cls):
        return obj
    if isinstance(obj, dict):
        cfg = dict(obj)
        cfg.pop("type", None)
        try:
            return cls(**cfg)
        except TypeError as e:
            raise KdetError(f"bad {cls.__name__} config {obj}: {e}") from None
    raise KdetError(f"expected a {cls.__name__} or its config dict, got {type(obj).__name__}")


def object_config(obj):
    """Config dict of a kdet core/loss object (None stays None)."""
    return None if obj is None else obj.get_config()


class BaseDenseHead(keras.layers.Layer):
    """Base of the dense heads. Subclasses override the hooks they need:

    * :meth:`forward_single` (or :meth:`forward`): one level's feature -> dict of maps;
    * :meth:`get_targets`: per-anchor training targets from padded ground truth;
    * :meth:`loss_by_feat`: the loss dict from outputs and targets;
    * :meth:`get_candidates`: per-level selection and box decoding for inference;
    * :meth:`post_process`: NMS (and e.g. PAA's score voting) -> padded detections.

    Args:
        num_classes: foreground classes (label ``num_classes`` means background).
        test_cfg: dict with ``nms_pre`` (per-level candidates), ``score_thr``,
            ``iou_threshold`` (NMS), ``max_per_img``; defaults :data:`DEFAULT_TEST_CFG`.
    """

    def __init__(self, num_classes, test_cfg=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise KdetError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        cfg = dict(DEFAULT_TEST_CFG)
        for key, value in dict(test_cfg or {}).items():
            if key == "nms" and isinstance(value, dict):  # mmdet style: nms=dict(iou_threshold=)
                cfg["iou_threshold"] = value.get("iou_threshold", cfg["iou_threshold"])
            else:
                cfg[key] = value
        if int(cfg["max_per_img"]) < 1:
            raise KdetError(f"test_cfg max_per_img must be >= 1, got {cfg['max_per_img']}")
        if not 0.0 <= float(cfg["iou_threshold"]) <= 1.0:
            raise KdetError(f"test_cfg iou_threshold must be in [0, 1], got {cfg['iou_threshold']}")
        self.test_cfg = cfg

    # -- forward -------------------------------------------------------------------------
    def call(self, features, training=None):
        """features: list of L NHWC maps -> dict of per-level lists (see :meth:`forward`)."""
        return self.forward(features, training=training)

    def forward(self, features, training=None):
        """Runs :meth:`forward_single` on every level and gathers its outputs into lists."""
        if not isinstance(features, (list, tuple)) or not features:
            raise KdetError(f"{type(self).__name__} expects a non-empty list of NHWC feature "
                            f"maps, got {type(features).__name__}")
        outs = [self.forward_single(x, level, training=training)
                for level, x in enumerate(features)]
        return {key: [o[key] for o in outs] for key in outs[0]}

    def forward_single(self, x, level, training=None):
        """One level ``[B, H, W, C_in]`` -> dict of NHWC maps. Subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_single")

    # -- training ------------------------------------------------------------------------
    def loss(self, outputs, gt, img_shape=None):
        """{loss name: scalar float32} for one (per-replica) batch.

        Args:
            outputs: the dict returned by :meth:`call`.
            gt: padded ground truth (``boxes [B, N, 4]``, ``labels [B, N]`` -1 padded,
                ``ignore [B, N]``), as :func:`kdet.models.base.check_ground_truth` returns it.
            img_shape: [B, 2] valid (h, w) per image, or None.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement loss")

    # -- inference -----------------------------------------------------------------------
    def predict(self, outputs, img_shape=None, input_shape=None):
        """Padded detections ``{"boxes", "scores", "labels", "num_detections"}`` in input pixels.

        Args:
            outputs: the dict returned by :meth:`call`.
            img_shape: [B, 2] valid (h, w) per image (boxes are clipped to it), or None.
            input_shape: (h, w) of the padded network input, used when ``img_shape`` is None.
        """
        img_shape = self.resolve_img_shape(outputs, img_shape, input_shape)
        candidates = self.get_candidates(outputs, img_shape)
        return self.post_process(candidates, img_shape)

    def get_candidates(self, outputs, img_shape):
        """Per-level candidate selection and decoding. Returns a dict with ``boxes [B, K, 4]``,
        ``scores [B, K]``, ``labels [B, K]`` (-1 invalid), optionally ``groups [B, K]`` (NMS
        groups) and head-specific extras for :meth:`post_process`. Subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_candidates")

    def post_process(self, candidates, img_shape):
        """NMS over the candidates -> padded detections (``max_per_img`` each)."""
        dets, _ = multiclass_nms(candidates["boxes"], candidates["scores"], candidates["labels"],
                                 self.test_cfg["iou_threshold"], int(self.test_cfg["max_per_img"]),
                                 candidates.get("groups"))
        return dets

    def resolve_img_shape(self, outputs, img_shape, input_shape=None):
        """``img_shape`` as a [B, 2] float32 tensor (the padded input size when None)."""
        first = next(iter(outputs.values()))[0]
        b = first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]
        if img_shape is None:
            if input_shape is None:
                raise KdetError("predict needs img_shape [B, 2] or input_shape (h, w)")
            img_shape = tf.cast(tf.stack([input_shape[0], input_shape[1]]), tf.float32)
            return tf.tile(img_shape[None], [b, 1])
        img_shape = tf.cast(img_shape, tf.float32)
        if img_shape.shape.rank != 2 or img_shape.shape[-1] != 2:
            raise KdetError(f"img_shape must be [B, 2] (height, width), got {img_shape.shape}")
        return img_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "test_cfg": dict(self.test_cfg)})
        return config
