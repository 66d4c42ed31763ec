"""Work-directory callbacks: exact resume after a crash, checkpoints, logs, metrics.

Keras' ``BackupAndRestore`` resumes at epoch granularity: after a kill in the middle of
epoch ``e`` it loads the last backup -- taken mid-epoch when ``save_freq`` is a number
of steps -- and then runs epoch ``e`` again from its first batch, so the batches seen
before the backup are trained twice. :class:`BackupAndRestore` here also records how
many steps of the epoch the backup holds and, on resume, replays those steps without
keeping their updates (each one's result is overwritten by the restored state), so
training continues exactly where the backup was taken. The replayed steps cost their
compute time once more; everything else (model and optimizer variables, the iteration
count the LR schedule reads) comes from the backup.

Exactness also needs the input to repeat itself: the dataset must yield the same
batches in epoch ``e`` of the resumed process as in the original one (no reshuffling
that depends on how many epochs this process has run, seeded augmentation), and
``steps_per_execution=1`` or a ``save_freq`` that is a multiple of it.
"""
import importlib.util
import json
import os

import keras

from kdet.errors import KdetError


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` with exact mid-epoch resume (see module doc).

    Args:
      backup_dir: folder of the backup (``latest.weights.h5`` + metadata).
      save_freq: ``"epoch"`` or a number of steps between backups.
      delete_checkpoint: remove the backup when ``fit`` finishes normally.
    """

    RESUME_FILE = "kdet_resume.json"

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint)
        self._resume_path = os.path.join(backup_dir, self.RESUME_FILE)
        self._steps_done = 0       # steps of the current epoch already trained
        self._replay = 0           # steps of the resumed epoch to replay and discard
        self._snapshot = None
        self.resumed_from = None   # (epoch, steps) restored by the last on_train_begin

    def _state(self):
        variables = list(self.model.variables)
        if self.model.optimizer is not None:
            variables += list(self.model.optimizer.variables)
        return variables

    def on_train_begin(self, logs=None):
        self._replay, self._snapshot, self.resumed_from = 0, None, None
        if not self.model.built:
            if not os.path.exists(self._weights_path):
                return    # nothing to restore; Keras would refuse an unbuilt model anyway
            raise KdetError(f"a backup in {self.backup_dir} can only be restored into a built "
                            "model: call kdet.training.ensure_built(model, dataset) (or the "
                            "model on one batch) before fit")
        super().on_train_begin(logs)
        if not (os.path.exists(self._resume_path) and os.path.exists(self._weights_path)):
            return
        with open(self._resume_path) as f:
            info = json.load(f)
        self.resumed_from = (int(info["epoch"]), int(info["steps_done"]))
        self._replay = int(info["steps_done"])
        if self._replay:
            self._snapshot = [v.numpy() for v in self._state()]

    def on_train_batch_end(self, batch, logs=None):
        if self._replay:
            if batch < self._replay:
                # A step the backup already contains: undo it by restoring the backup.
                for v, value in zip(self._state(), self._snapshot):
                    v.assign(value)
                if batch + 1 == self._replay:
                    self._replay, self._snapshot = 0, None
                    self._steps_done = batch + 1
                    self._last_batch_seen = batch
                    self._batches_seen_since_last_saving = 0
                return
            raise KdetError(f"resume: expected to replay {self._replay} steps of epoch "
                            f"{self._current_epoch} but batch {batch} came first; use "
                            "steps_per_execution=1 or a save_freq that is a multiple of it")
        self._steps_done = batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch
        self._steps_done = 0

    def on_epoch_end(self, epoch, logs=None):
        self._steps_done = 0
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        super()._save_model()
        with open(self._resume_path, "w") as f:
            json.dump({"epoch": self._current_epoch, "steps_done": self._steps_done}, f)


def ensure_built(model, dataset):
    """Builds ``model`` (and so its variables) by calling it on the first batch of
    ``dataset`` (``(images, gt)`` elements), so that a backup or checkpoint can be
    loaded before ``fit`` trains. No-op when already built."""
    if model.built:
        return model
    for batch in dataset:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        model(images, training=False)
        return model
    raise KdetError("ensure_built: the dataset is empty")


def fit_callbacks(work_dir, eval_callback=None, backup_freq="epoch", checkpoint_every=1,
                  monitor=None, monitor_mode="max", tensorboard=None, csv=True,
                  delete_backup=True):
    """The callbacks of a training run in ``work_dir`` (what ``kdet train`` uses).

    Returns, in this order (order matters, see ``COCOEvalCallback``):

    1. ``eval_callback`` (e.g. ``kdet.evaluation.COCOEvalCallback``), if given, first so
       the others see its ``val_*`` metrics;
    2. :class:`BackupAndRestore` in ``work_dir/backup`` (``backup_freq``: "epoch" or
       steps) -- rerunning the same script resumes the interrupted run;
    3. ``ModelCheckpoint`` -> ``work_dir/checkpoints/epoch_{NNN}.weights.h5`` every
       ``checkpoint_every`` epochs (mmdet's ``epoch_N.pth``), and, with ``monitor``
       (e.g. ``"val_bbox_mAP"``), ``best.weights.h5``;
    4. ``TensorBoard`` -> ``work_dir/tensorboard`` (``tensorboard=None``: when the
       ``tensorboard`` package is installed -- TF 2.21's wheels no longer pull it in);
    5. ``CSVLogger`` -> ``work_dir/metrics.csv`` (appends across resumes).

    Under ``MultiWorkerMirroredStrategy`` non-chief workers write into a private
    ``work_dir/workers/...`` (see ``kdet.training.worker_dir``).
    """
    from kdet.training.distribute import worker_dir

    if not work_dir:
        raise KdetError("fit_callbacks needs a work_dir")
    if int(checkpoint_every) < 0:
        raise KdetError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    root = worker_dir(os.fspath(work_dir))
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    callbacks = [] if eval_callback is None else [eval_callback]
    callbacks.append(BackupAndRestore(os.path.join(root, "backup"), save_freq=backup_freq,
                                      delete_checkpoint=delete_backup))
    if checkpoint_every:
        callbacks.append(_EveryNEpochsCheckpoint(
            os.path.join(root, "checkpoints", "epoch_{epoch:03d}.weights.h5"),
            int(checkpoint_every)))
    if monitor:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            os.path.join(root, "checkpoints", "best.weights.h5"), monitor=monitor,
            mode=monitor_mode, save_best_only=True, save_weights_only=True))
    have_tb = importlib.util.find_spec("tensorboard") is not None
    if tensorboard and not have_tb:
        raise KdetError("tensorboard=True but the tensorboard package is not installed "
                        "(pip install tensorboard)")
    if tensorboard or (tensorboard is None and have_tb):
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(root, "tensorboard")))
    if csv:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(root, "metrics.csv"),
                                                   append=True))
    return callbacks


class _EveryNEpochsCheckpoint(keras.callbacks.Callback):
    """Saves ``filepath.format(epoch=1-based)`` (weights only) every ``every`` epochs."""

    def __init__(self, filepath, every):
        super().__init__()
        self.filepath, self.every = filepath, every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.model.save_weights(self.filepath.format(epoch=epoch + 1), overwrite=True)
