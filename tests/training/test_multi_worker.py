"""The two-process MultiWorkerMirroredStrategy example on localhost == one process."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
EXAMPLE = os.path.join(REPO, "examples", "multi_worker_train.py")
LAUNCHER = os.path.join(REPO, "examples", "launch_multi_worker.py")


def _results(stdout):
    out = {}
    for line in stdout.splitlines():
        body = line.split("] ", 1)[-1]
        if body.startswith("{"):
            r = json.loads(body)
            out[r["task"]] = r
    return out


@pytest.mark.slow   # ~30 s of CPU (3 TensorFlow processes); ~100 s wall on a busy 2-core box
def test_two_workers_on_localhost_match_a_single_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = REPO
    multi = subprocess.Popen([sys.executable, LAUNCHER, "--num-workers", "2", "--timeout", "240",
                              "--", sys.executable, EXAMPLE, "--work-dir", str(tmp_path / "mw")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = subprocess.run([sys.executable, EXAMPLE, "--work-dir", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=240)
    out, _ = multi.communicate(timeout=300)
    assert multi.returncode == 0, out[-4000:]
    assert single.returncode == 0, single.stderr[-3000:]
    workers = _results(out)
    one = _results(single.stdout)["worker:0"]
    assert sorted(workers) == ["worker:0", "worker:1"]
    assert all(w["replicas"] == 2 for w in workers.values()) and one["replicas"] == 1
    # Synchronous data parallelism: both workers end with the same weights, and (losses
    # normalised with normalize_by_positives) the same as one process on the whole batch.
    w0, w1 = workers["worker:0"], workers["worker:1"]
    assert abs(w0["weights_checksum"] - w1["weights_checksum"]) < 1e-5
    assert abs(workers["worker:0"]["weights_checksum"] - one["weights_checksum"]) < 1e-4
    assert abs(workers["worker:0"]["loss"][-1] - one["loss"][-1]) < 1e-4
    # The chief writes into the work dir, the other worker into workers/worker_1.
    assert (tmp_path / "mw" / "checkpoints" / "epoch_002.weights.h5").exists()
    assert (tmp_path / "mw" / "workers" / "worker_1").is_dir()
