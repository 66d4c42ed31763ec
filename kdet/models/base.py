"""``Detector``: the base of every kdet detector (a ``keras.Model`` subclass).

The contract every detector follows (two-stage and single-stage alike):

* ``model(images, training=False)`` / ``model.predict(images)`` take normalised, padded images
  ``[B, H, W, 3]`` float32 and return fixed-size, padded detections in input-image pixels::

      {"boxes": [B, M, 4] float32 xyxy, "scores": [B, M] float32 (0 for padding),
       "labels": [B, M] int32 (0..num_classes-1, -1 for padding),
       "num_detections": [B] int32,
       "masks": [B, M, 28, 28] float32 mask probabilities in box coordinates (Mask R-CNN)}

  with ``M = test_cfg["max_per_img"]`` (100). ``kdet.evaluation`` maps them back to
  original-image pixels and pastes masks.
* ``compute_losses(images, gt, training=True) -> {name: scalar}`` computes the losses inside
  the model from the padded ground truth of DESIGN.md (``boxes [B,N,4]``, ``labels [B,N]``
  with -1 padding, ``ignore [B,N]``, optional ``masks [B,N,H,W]``); meta keys in ``gt``
  (``image_id``, ``img_shape``, ...) are allowed and ``img_shape`` [B, 2] (valid h, w before
  padding) is used for anchor validity and clipping when present.
* ``model.fit(ds)`` runs ``train_step``: the sum of ``compute_losses`` (plus layer
  regularisation losses) is differentiated; each loss and the total appear in the progress bar
  under the names in ``loss_names``. Under ``tf.distribute`` each replica's loss is divided by
  the number of replicas and the optimizer sums gradients across replicas, which averages them
  as PyTorch DDP does (MMDetection's semantics).
* ``preprocessing`` (style, mean, std, channel order, img_scale, size_divisor) travels in the
  config, so export and checkpoint import reproduce the normalisation exactly.
"""
import keras
import tensorflow as tf

from kdet.data.transforms import NORMALIZATION as STYLES  # MMDetection img_norm_cfg
from kdet.errors import KdetError


def default_preprocessing(style="pytorch", img_scale=(1333, 800), size_divisor=32):
    """The preprocessing dict a detector carries: how its inputs were normalised and sized."""
    if style not in STYLES:
        raise KdetError(f"style must be one of {list(STYLES)}, got {style!r}")
    return dict(style=style, **{k: list(v) if isinstance(v, tuple) else v
                                for k, v in STYLES[style].items()},
                img_scale=list(img_scale), size_divisor=int(size_divisor))


def deserialize_backbone(config):
    """``from_config`` helper: a copy of ``config`` whose ``backbone`` entry, when it is a
    serialised Keras object (a custom backbone instance), is rebuilt; names stay names."""
    config = dict(config)
    if isinstance(config.get("backbone"), dict) and "class_name" in config["backbone"]:
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    return config


def check_ground_truth(gt, with_masks=False):
    """Validate the padded ground-truth dict of DESIGN.md; returns it with ``ignore`` filled."""
    if not isinstance(gt, dict):
        raise KdetError(f"ground truth must be a dict with 'boxes' and 'labels', got "
                        f"{type(gt).__name__}")
    for key in ("boxes", "labels"):
        if key not in gt:
            raise KdetError(f"ground truth is missing {key!r} (keys: {sorted(gt)})")
    boxes, labels = gt["boxes"], gt["labels"]
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise KdetError(f"gt['boxes'] must be [B, N, 4], got {boxes.shape}")
    if labels.shape.rank != 2:
        raise KdetError(f"gt['labels'] must be [B, N], got {labels.shape}")
    if with_masks and "masks" not in gt:
        raise KdetError("this model needs gt['masks'] [B, N, H, W] (use with_masks=True in "
                        "kdet.data.coco_dataset)")
    out = dict(gt)
    out["boxes"] = tf.cast(boxes, tf.float32)
    out["labels"] = tf.cast(labels, tf.int32)
    if "ignore" not in out:
        out["ignore"] = tf.zeros_like(out["labels"], tf.bool)
    return out


class Detector(keras.Model):
    """Base class: subclasses implement ``call`` and ``compute_losses`` and set ``loss_names``."""

    loss_names = ()
    # Head attributes, in MMDetection's module order; each is also its checkpoint key prefix.
    torch_heads = ()

    def __init__(self, num_classes, preprocessing=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise KdetError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.preprocessing = dict(preprocessing or default_preprocessing())
        self._trackers = {name: keras.metrics.Mean(name=name)
                          for name in ("loss",) + tuple(self.loss_names)}

    # -- hooks ---------------------------------------------------------------------------
    def compute_losses(self, images, gt, training=True):
        """{loss name: scalar float32} for one (per-replica) batch. Subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_losses")

    # -- checkpoints ---------------------------------------------------------------------
    def torch_state_map(self):
        """{MMDetection v2 key: variable or TorchParam} for
        ``kdet.convert.load_weights(model, sd, "mmdet")``: ``backbone.*``, ``neck.*``, then each
        head of ``torch_heads`` under its own name (see the heads' ``torch_state_map`` for the
        layouts)."""
        self.build()
        out = {f"backbone.{k}": v for k, v in self.backbone.torch_state_map().items()}
        out.update(self.neck.torch_state_map("neck"))
        for name in self.torch_heads:
            out.update(getattr(self, name).torch_state_map(name))
        return out

    # -- Keras training loop -------------------------------------------------------------
    @property
    def metrics(self):
        return list(self._trackers.values())

    def _unpack(self, data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise KdetError("a detector trains on (images, ground_truth) pairs; got "
                            f"{type(data).__name__}")
        return data[0], data[1]

    def _total(self, losses):
        total = tf.add_n([tf.cast(v, tf.float32) for v in losses.values()])
        if self.losses:
            total += tf.add_n([tf.cast(v, tf.float32) for v in self.losses])
        return total

    def _report(self, losses, total):
        self._trackers["loss"].update_state(total)
        for name, value in losses.items():
            if name in self._trackers:
                self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, data):
        images, gt = self._unpack(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, gt, training=True)
            total = self._total(losses)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._report(losses, total)

    def test_step(self, data):
        images, gt = self._unpack(data)
        losses = self.compute_losses(images, gt, training=False)
        return self._report(losses, self._total(losses))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build from the first replica's batch under a distribution strategy.

        Keras 3.15 learns the input shapes by reducing one distributed batch with
        ``strategy.reduce("MEAN")``, which fails on the boolean ``gt["ignore"]`` and needlessly
        all-reduces the images; only the shapes matter, and every replica's are the same.
        """
        strategy = self._distribute_strategy
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

        def local(v):
            if isinstance(v, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(v)[0]
            return v

        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(local, next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self(images, training=False)

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes,
                "preprocessing": self.preprocessing}
