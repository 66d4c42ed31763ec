"""Loss reduction helpers; one MirroredStrategy step == one single-device step."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.training import (is_chief, make_strategy, normalize_by_positives, num_replicas,
                           positives_normalizer, scale_replica_mean, worker_dir)

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def _run_script(name, timeout=240, env=None):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", name)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mirrored_step_equals_single_device_step():
    out = _run_script("mirrored_step.py")
    assert out["helper"]["moved"] > 1e-3          # the two steps did change the weights
    assert out["helper"]["diff"] < 1e-5
    # Per-replica positives (no reduce_mean) give other weights: the check has teeth.
    assert out["naive"]["diff"] > 1e-3


def test_helpers_are_identity_on_one_replica():
    assert num_replicas() == 1
    assert float(positives_normalizer(0)) == 1.0          # guarded for zero positives
    assert float(positives_normalizer(7)) == 7.0
    assert float(normalize_by_positives(14.0, 7)) == 2.0
    assert float(normalize_by_positives(3.0, 0)) == 3.0
    assert float(scale_replica_mean(tf.constant(5.0))) == 5.0


def test_strategy_and_tf_config(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("auto") is tf.distribute.get_strategy()
    assert is_chief() and worker_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(KdetError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    with pytest.raises(KdetError, match="unknown strategy"):
        make_strategy("tpu_pod")
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    assert worker_dir(str(tmp_path)) == os.path.join(str(tmp_path), "workers", "worker_1")
    monkeypatch.setenv("TF_CONFIG", "{broken")
    with pytest.raises(KdetError, match="not valid json"):
        make_strategy("auto")
