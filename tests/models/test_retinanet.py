"""kdet.models.RetinaNet: the Detector contract (predict, fit under XLA, config and
save/load), MMDetection's architecture, MirroredStrategy for all single-stage detectors."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kdet.errors import KdetError
from kdet.models import RetinaNet

from .single_stage_common import batch, check_fit_xla, check_predict_contract, check_save_load, tiny

REPO = str(pathlib.Path(__file__).resolve().parents[2])


def test_mmdet_architecture_r50_parameter_count():
    # mmdet retinanet_r50_fpn_1x_coco, parameters counted from its module shapes:
    # ResNet-50 without fc 23,508,032; FPN laterals 918,272 + 3x3 outputs 1,770,240 + extra
    # convs on C5 (2048 -> 256) 4,718,848 and P6 -> P7 590,080; RetinaHead 8 tower convs
    # 4,720,640 + retina_cls (9 x 80) 1,659,600 + retina_reg 82,980. Total 37,968,692.
    model = RetinaNet(backbone="resnet50", num_classes=80)
    model(tf.zeros((1, 128, 128, 3)))
    buffers = sum(int(np.prod(w.shape)) for w in model.weights
                  if "moving_" in w.path)  # BN running stats: buffers in torch
    assert model.count_params() - buffers == 37_968_692
    head = model.bbox_head
    assert head.anchor_generator.get_config()["octave_base_scale"] == 4
    assert head.anchor_generator.scales_per_octave == 3
    assert model.neck.add_extra_convs == "on_input" and model.neck.start_level == 1
    assert head.test_cfg == {"nms_pre": 1000, "score_thr": 0.05, "iou_threshold": 0.5,
                             "max_per_img": 100}
    assert (head.loss_cls.gamma, head.loss_cls.alpha) == (2.0, 0.25)
    assert type(head.loss_bbox).__name__ == "L1Loss"


def test_predict_and_save_load_round_trip(tmp_path):
    model = tiny(RetinaNet)
    check_predict_contract(model)
    check_save_load(model, RetinaNet, tmp_path)


@pytest.mark.slow  # XLA-compiles the whole train step (minutes on the shared 2-core CPU)
def test_fit_with_jit_compile():
    check_fit_xla(tiny(RetinaNet), ("loss_cls", "loss_bbox"))


def test_bad_input_raises_kdet_errors():
    with pytest.raises(KdetError, match="num_classes"):
        RetinaNet(backbone="regnetx_400mf", num_classes=0)
    with pytest.raises(KdetError, match="unknown backbone"):
        RetinaNet(backbone="regnetx_1tf", num_classes=3)
    with pytest.raises(KdetError, match="head arguments"):
        RetinaNet(backbone="regnetx_400mf", num_classes=3, head={"no_such_arg": 1})
    with pytest.raises(KdetError, match="anchor levels"):
        RetinaNet(backbone="regnetx_400mf", num_classes=3, neck={"num_outs": 4})
    model = tiny(RetinaNet)
    images, gt = batch()
    with pytest.raises(KdetError, match="missing 'labels'"):
        model.compute_losses(tf.constant(images), {"boxes": gt["boxes"]})
    with pytest.raises(KdetError, match="NHWC|channels"):
        model(tf.zeros((1, 64, 64, 4)))


@pytest.mark.slow  # six model.fit traces in a subprocess
def test_mirrored_strategy_step_equals_single_device_step():
    script = os.path.join(REPO, "tests", "models", "scripts", "single_stage_mirrored.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"RetinaNet", "ATSS", "PAA"}
    for name, r in out.items():
        assert r["moved"] > 1e-5, (name, r)
        assert r["diff"] < 1e-5 * max(1.0, r["moved"] * 100), (name, r)
        assert np.isclose(r["loss_single"], r["loss_mirrored"], rtol=1e-4), (name, r)
