"""Synchronous data-parallel training over several processes with MultiWorkerMirroredStrategy.

Each worker runs this same script with its own ``TF_CONFIG``, e.g. for worker 1 of 2:

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 1}}' python multi_worker_train.py ...

``examples/launch_multi_worker.py`` starts N such workers on localhost:

    python examples/launch_multi_worker.py --num-workers 2 -- \
        python examples/multi_worker_train.py --work-dir /tmp/mw

The model is a tiny dense detector (per-pixel objectness + box offsets) so the example
runs in seconds on a CPU; swap in ``kdet.models.RetinaNet(...)`` and
``kdet.data.coco_dataset(...)`` for real training (kdet detectors already normalise and
scale their losses as below) -- the rest is the same: build and compile inside
``strategy.scope()``, give ``fit`` the *global* batch, and let
``kdet.training.fit_callbacks`` put non-chief workers' files aside.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")   # the example runs on CPU workers

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdet.training import (fit_callbacks, is_chief, make_strategy,  # noqa: E402
                           normalize_by_positives, scale_replica_mean, sgd, step_schedule,
                           task_info)


class TinyDenseDetector(keras.Model):
    """[B, H, W, 3] -> [B, H, W, 3]: an objectness logit and two regression outputs."""

    def __init__(self):
        super().__init__()
        self.body = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.head = keras.layers.Conv2D(3, 1)

    def call(self, images):
        return self.head(self.body(images))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        pos = tf.cast(y[..., 0] > 0.5, tf.float32)
        cls = tf.nn.sigmoid_cross_entropy_with_logits(labels=pos, logits=y_pred[..., 0])
        reg = tf.reduce_sum(tf.abs(y_pred[..., 1:] - y[..., 1:]), axis=-1) * pos
        # Per-replica loss normalised by the positives averaged over replicas (mmdet's
        # reduce_mean), then / replicas: the optimizer sums replicas' gradients, so they
        # average as under DDP. (kdet.models' Detector.train_step does this division.)
        loss = normalize_by_positives(tf.reduce_sum(cls) + tf.reduce_sum(reg),
                                      tf.reduce_sum(pos))
        return scale_replica_mean(loss)


def make_dataset(global_batch, num_batches, seed=0):
    """A fixed synthetic set; tf.distribute shards it across the workers."""
    rng = np.random.default_rng(seed)
    n = global_batch * num_batches
    x = rng.normal(size=(n, 16, 16, 3)).astype(np.float32)
    y = np.zeros((n, 16, 16, 3), np.float32)
    y[..., 0] = x[..., 0] > 1.0                         # "objects" where channel 0 is bright
    y[..., 1:] = x[..., 1:] * 0.5
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch, drop_remainder=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--steps-per-epoch", type=int, default=4)
    args = p.parse_args(argv)

    strategy = make_strategy("auto")     # MultiWorkerMirroredStrategy when TF_CONFIG says so
    keras.utils.set_random_seed(0)       # same initial weights on every worker
    with strategy.scope():
        model = TinyDenseDetector()
        model(tf.zeros((1, 16, 16, 3)))   # variables are created here: mirrored
        lr = step_schedule(0.02, args.steps_per_epoch, [args.epochs - 1], warmup_iters=2)
        model.compile(optimizer=sgd(lr, weight_decay=1e-4, clip_global_norm=35.0))
    ds = make_dataset(args.global_batch, args.steps_per_epoch)
    history = model.fit(ds, epochs=args.epochs, verbose=2 if is_chief() else 0,
                        callbacks=fit_callbacks(args.work_dir, tensorboard=False))
    ttype, index = task_info()
    checksum = float(sum(np.abs(w).sum() for w in model.get_weights()))
    print(json.dumps({"task": f"{ttype}:{index}", "replicas": strategy.num_replicas_in_sync,
                      "loss": history.history["loss"], "weights_checksum": checksum}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
