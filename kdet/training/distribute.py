"""Loss reduction under ``tf.distribute`` and strategy helpers.

How Keras 3 (TensorFlow backend) trains under ``MirroredStrategy`` /
``MultiWorkerMirroredStrategy``: every replica runs ``train_step`` on its slice of the
global batch and the optimizer **sums** the replicas' gradients (``all_reduce(SUM)``).
MMDetection under DDP instead *averages* the GPUs' gradients, each GPU computing its
losses on its own images. kdet keeps mmdet's per-GPU losses and averages:

1. each replica computes its losses exactly as one mmdet GPU does -- normalised by its
   own positives (RetinaNet's ``AnchorHead``), or by the positives averaged over all
   replicas where mmdet calls ``reduce_mean(num_pos)`` (ATSS, FCOS, PAA's centerness):
   ``normalize_by_positives(local_sum, local_num_pos)`` = ``local_sum /
   max(mean over replicas of num_pos, 1)``;
2. the total is divided by the number of replicas before the gradient
   (``scale_replica_mean``; ``kdet.models``' ``Detector.train_step`` does it), so the
   summed gradients are the replicas' average, as DDP.

With one replica every helper is the identity, and a loss written this way gives the
same gradients on one device with the global batch as on R replicas with R slices
whenever the per-GPU normaliser is global (``reduce_mean``) -- tested to 1e-5.
Keras' own ``compile(loss=...)`` losses and ``self.losses`` are divided by R by Keras
(``Model._aggregate_additional_loss``); do not divide them again.
"""
import json
import os

import tensorflow as tf

from kdet.errors import KdetError


from kdet.ops.distributed import (  # noqa: F401  (re-exported: the reduction helpers)
    all_reduce_mean, all_reduce_sum, normalize_by_positives, num_replicas, positives_normalizer,
    scale_replica_mean,
)


def make_strategy(kind="auto", devices=None):
    """Builds a ``tf.distribute`` strategy.

    kind: ``"default"`` (no distribution), ``"mirrored"`` (all local GPUs, or
    ``devices``), ``"multi_worker"`` (``MultiWorkerMirroredStrategy``, cluster from the
    ``TF_CONFIG`` environment variable), ``"auto"`` (multi_worker when ``TF_CONFIG`` names
    more than one worker, mirrored when more than one GPU is visible, else default).
    Build and compile the model inside ``strategy.scope()``.
    """
    if kind == "auto":
        workers = cluster_spec().get("worker", [])
        if len(workers) > 1:
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1 or devices:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise KdetError("multi_worker strategy needs the TF_CONFIG environment variable "
                            "(see docs/training.md)")
        enable_keras_multi_worker_fixes()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise KdetError(f"unknown strategy kind {kind!r}: auto, default, mirrored, multi_worker")


def cluster_spec():
    """The ``cluster`` dict of ``TF_CONFIG`` ({} when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise KdetError(f"TF_CONFIG is not valid json: {e}") from None


def task_info():
    """(task type, index) from ``TF_CONFIG``; ("worker", 0) when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "worker", 0
    task = json.loads(raw).get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def is_chief():
    """True on the worker that writes checkpoints and logs (``chief``, or worker 0)."""
    ttype, index = task_info()
    if ttype == "chief":
        return True
    return ttype == "worker" and index == 0 and "chief" not in cluster_spec()


def worker_dir(work_dir):
    """``work_dir`` on the chief; a private ``work_dir/workers/<type>_<i>`` elsewhere.

    In multi-worker training every worker runs the callbacks (they take part in the
    collective save), but only the chief's files are kept."""
    if is_chief():
        return work_dir
    ttype, index = task_info()
    return os.path.join(work_dir, "workers", f"{ttype}_{index}")


_PATCHED = []


def _is_multi_worker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def enable_keras_multi_worker_fixes():
    """Works around two Keras 3 (3.15) bugs that stop ``fit`` under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585); called by
    ``make_strategy("multi_worker")``, idempotent, no effect on other strategies.

    1. ``fit`` first reduces one distributed input batch with ``strategy.reduce("MEAN")``
       in eager mode just to learn its shapes, which fails across workers; the fix takes
       the shapes from the local replica's batch.
    2. Each step's metrics (scalars) are reduced with ``axis=0``, which fails on rank 0;
       the fix reduces scalars with ``axis=None`` (the mean over replicas).
    """
    if _PATCHED:
        return
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local(v):
        if isinstance(v, tf.distribute.DistributedValues):
            return v._values[0] if hasattr(v, "_values") else v
        return v

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not _is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tree.map_structure(local, next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not _is_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def _reduce(v):
            if not isinstance(v, tf.distribute.DistributedValues):
                return v
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tree.map_structure(_reduce, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED.append(True)
