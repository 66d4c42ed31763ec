"""Kill a real training process mid-epoch (SIGKILL), rerun it, get the same final weights."""
import importlib.util
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from kdet.errors import KdetError
from kdet.training import BackupAndRestore, ensure_built, fit_callbacks, sgd

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(HERE, "scripts", "resume_train.py")
ENV = {**os.environ, "PYTHONPATH": REPO}


def _start(work_dir, *extra):
    return subprocess.Popen([sys.executable, SCRIPT, str(work_dir), *extra], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _kill_when_paused(proc):
    for line in proc.stdout:
        if line.strip() == "PAUSED":
            break
    else:
        raise AssertionError(proc.stderr.read()[-3000:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _max_diff(a_dir, b_dir):
    a, b = np.load(os.path.join(a_dir, "final.npz")), np.load(os.path.join(b_dir, "final.npz"))
    assert sorted(a.files) == sorted(b.files)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a.files)


def _interrupted_run(work_dir, *extra):
    # Killed in the 2nd epoch after its 3rd step; the last backup (every 2 steps) holds
    # 2 steps of that epoch.
    _kill_when_paused(_start(work_dir, "--pause-at", "1:2", *extra))
    return _finish(_start(work_dir, *extra))


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    full = _start(tmp_path / "full")           # the uninterrupted reference, in parallel
    resumed = _interrupted_run(tmp_path / "killed")
    assert _finish(full)["resumed_from"] is None
    assert resumed["resumed_from"] == [1, 2]
    assert resumed["iterations"] == 18          # 3 epochs x 6 steps, none counted twice
    assert _max_diff(tmp_path / "full", tmp_path / "killed") < 1e-6
    assert not (tmp_path / "killed" / "backup").exists()   # removed after a clean finish
    assert sorted(os.listdir(tmp_path / "killed" / "checkpoints")) == [
        "epoch_001.weights.h5", "epoch_002.weights.h5", "epoch_003.weights.h5"]


@pytest.mark.slow
def test_keras_backup_alone_retrains_the_partial_epoch(tmp_path):
    """Why kdet's BackupAndRestore exists: Keras' restarts the epoch from batch 0."""
    full = _start(tmp_path / "full")
    _interrupted_run(tmp_path / "keras", "--keras-backup")
    _finish(full)
    assert _max_diff(tmp_path / "full", tmp_path / "keras") > 1e-4


def test_fit_callbacks_layout_and_errors(tmp_path):
    marker = keras.callbacks.Callback()
    cbs = fit_callbacks(str(tmp_path), eval_callback=marker, monitor="val_bbox_mAP")
    assert cbs[0] is marker
    kinds = [type(c).__name__ for c in cbs]
    assert kinds[1] == "BackupAndRestore" and isinstance(cbs[1], BackupAndRestore)
    assert kinds[-1] == "CSVLogger" and "ModelCheckpoint" in kinds
    have_tb = importlib.util.find_spec("tensorboard") is not None
    assert ("TensorBoard" in kinds) == have_tb        # default: only when installed
    if not have_tb:
        with pytest.raises(KdetError, match="tensorboard"):
            fit_callbacks(str(tmp_path), tensorboard=True)
    with pytest.raises(KdetError, match="work_dir"):
        fit_callbacks("")


def test_backup_needs_a_built_model_only_to_restore(tmp_path):
    def model():
        m = keras.Sequential([keras.layers.Dense(2)])
        m.compile(optimizer=sgd(0.1), loss="mse")
        return m

    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    backup = BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    model().fit(x, y, epochs=1, verbose=0, callbacks=[backup])     # unbuilt, nothing to restore
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    with pytest.raises(KdetError, match="ensure_built"):
        model().fit(x, y, epochs=2, verbose=0,
                    callbacks=[BackupAndRestore(str(tmp_path / "backup"))])
    m = ensure_built(model(), [(x, y)])
    cb = BackupAndRestore(str(tmp_path / "backup"))
    m.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert cb.resumed_from == (1, 0)          # epoch 1 done, resumed at an epoch boundary
    with pytest.raises(KdetError, match="empty"):
        ensure_built(model(), [])
