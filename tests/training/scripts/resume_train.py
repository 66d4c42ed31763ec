"""Run by test_resume.py: a small deterministic training run in a work directory.

usage: resume_train.py WORK_DIR [--pause-at EPOCH:BATCH]
With --pause-at it prints PAUSED after that (0-based) batch and sleeps, to be SIGKILLed.
At the end it writes WORK_DIR/final.npz (all model and optimizer variables) and prints
a json line with what the backup callback restored.
"""
import argparse
import json
import os
import sys
import time

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kdet.training import BackupAndRestore, fit_callbacks, sgd, step_schedule  # noqa: E402

EPOCHS, STEPS, BATCH = 3, 6, 4


class Pause(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            print("PAUSED", flush=True)
            time.sleep(600)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work_dir")
    p.add_argument("--pause-at")
    p.add_argument("--keras-backup", action="store_true",
                   help="use keras.callbacks.BackupAndRestore (epoch-granular) instead")
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 8, 8, 3)).astype(np.float32)
    y = rng.normal(size=(STEPS * BATCH, 4)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)   # same order every epoch
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    lr = step_schedule(0.05, STEPS, [2], warmup_iters=5, warmup_ratio=0.1)
    model.compile(optimizer=sgd(lr, weight_decay=1e-3, clip_global_norm=5.0), loss="mse")
    callbacks = fit_callbacks(args.work_dir, backup_freq=2, tensorboard=False)
    if args.keras_backup:
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(args.work_dir, "backup"),
                                                      save_freq=2)]
    if args.pause_at:
        callbacks.append(Pause(*(int(v) for v in args.pause_at.split(":"))))
    model.fit(ds, epochs=EPOCHS, callbacks=callbacks, verbose=0, shuffle=False)
    state = {f"m{i}": v.numpy() for i, v in enumerate(model.variables)}
    state.update({f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    np.savez(os.path.join(args.work_dir, "final.npz"), **state)
    backup = next((c for c in callbacks if isinstance(c, BackupAndRestore)), None)
    print(json.dumps({"resumed_from": backup and backup.resumed_from,
                      "iterations": int(model.optimizer.iterations.numpy())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
