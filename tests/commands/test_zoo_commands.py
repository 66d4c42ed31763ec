"""`kdet zoo | train | test | export` on a tiny synthetic dataset with a tiny config file."""
import csv
import json
import os

import numpy as np
import pytest

from kdet import cli

TINY = """
from kdet.zoo import PYCLS_NORM, Recipe, SeedResult, ZooConfig
CONFIG = ZooConfig(name="tiny_retinanet", model="RetinaNet", backbone="regnetx_400mf",
    backbone_kwargs=dict(frozen_stages=1, norm_eval=True, style="pytorch"), source="test",
    fpn_in_channels=(32, 64, 160, 384),
    model_kwargs=dict(head=dict(test_cfg=dict(score_thr=0.0))),
    recipe=Recipe(img_scale=(128, 96), img_norm=PYCLS_NORM, warmup_iters=0, base_lr=0.08),
    seed=SeedResult())
"""


def _err(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ------------------------------------------------------------------ zoo (no model built)

def test_zoo_list_prints_every_config(capsys):
    import kdet.zoo
    assert cli.main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in kdet.zoo.list_configs():
        assert name in out
    row = [line for line in out.splitlines()
           if line.startswith("mask_rcnn_regnetx-4GF_fpn_mstrain-poly_3x_coco ")][0]
    assert "43.4" in row and "39.2" in row
    assert "not measured here" in out and "benchmarks/zoo_table.py" in out


def test_zoo_list_json_and_method(capsys):
    assert cli.main(["zoo", "list", "--method", "paa", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted(r["name"] for r in rows) == sorted(
        f"paa_r{d}_fpn_{s}_coco" for d, ss in ((50, ("1x", "1.5x", "2x", "mstrain_3x")),
                                               (101, ("1x", "2x", "mstrain_3x"))) for s in ss)
    assert {r["name"]: r["box_ap"] for r in rows}["paa_r101_fpn_mstrain_3x_coco"] == 45.1


def test_zoo_errors_are_one_line(capsys):
    assert cli.main(["zoo", "build", "mask_rcnn_regnetx-3.2GF_fpn_1x"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith("kdet zoo: error: unknown config")
    assert "mask_rcnn_regnetx-3.2GF_fpn_1x_coco" in err[0]
    assert cli.main(["zoo", "build", "cascade_mask_rcnn_regnetx-4GF_fpn_mstrain_3x_coco"]) == 2
    assert "not implemented" in _err(capsys)[0]
    assert cli.main(["zoo", "list", "--method", "yolo"]) == 2


def test_train_input_errors(tmp_path, capsys):
    assert cli.main(["train", "retinanet_r50_fpn_1x_coco", "--data", str(tmp_path / "no")]) == 2
    assert "is not a folder" in _err(capsys)[0]
    assert cli.main(["train", "retinanet_r50_fpn_1x_coco", "--data", str(tmp_path)]) == 2
    assert "holds neither" in _err(capsys)[0]
    assert cli.main(["train", "retinanet_r50_fpn_1x_coco", "--data", str(tmp_path),
                     "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in _err(capsys)[0]


# ------------------------------------------------------------------ train -> test -> export

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import kdet
    root = tmp_path_factory.mktemp("cli")
    kdet.data.make_shapes_dataset(root / "data", num_images=10, image_size=(96, 128), seed=5,
                                  val_fraction=0.4)
    config = root / "tiny_retinanet.py"
    config.write_text(TINY)
    work = root / "work"
    rc = cli.main(["train", str(config), "--data", str(root / "data"), "--work-dir", str(work),
                   "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                   "--verbose", "0"])
    assert rc == 0
    return dict(root=root, config=config, work=work)


def test_train_work_dir(trained):
    work = trained["work"]
    resolved = json.load(open(work / "config.json"))
    assert resolved["config"] == "tiny_retinanet" and resolved["num_classes"] == 3
    assert resolved["train"]["lr"] == pytest.approx(0.08 * 2 / 16)   # linear scaling rule
    assert resolved["model_arguments"]["preprocessing"]["style"] == "pycls"
    for path in ("checkpoints/epoch_001.weights.h5", "checkpoints/latest.weights.h5",
                 "checkpoints/best.weights.h5", "results/epoch_1.bbox.json", "metrics.csv"):
        assert (work / path).exists(), path
    assert os.listdir(work / "tensorboard")
    assert not (work / "backup").exists() or not os.listdir(work / "backup")
    rows = list(csv.DictReader(open(work / "metrics.csv")))
    assert len(rows) == 1 and "val_bbox_mAP" in rows[0] and float(rows[0]["loss"]) > 0


def test_test_reproduces_the_training_evaluation(trained, capsys):
    """kdet test on the final weights == the COCOEvalCallback's numbers after that epoch."""
    work, root = trained["work"], trained["root"]
    capsys.readouterr()
    assert cli.main(["test", str(trained["config"]), "--weights",
                     str(work / "checkpoints" / "latest.weights.h5"), "--data",
                     str(root / "data"), "--out", str(root / "test_out")]) == 0
    assert "bbox_mAP = " in capsys.readouterr().out
    metrics = json.load(open(f"{root}/test_out.metrics.json"))
    logged = list(csv.DictReader(open(work / "metrics.csv")))[-1]
    assert len(metrics) == 12
    for k, v in metrics.items():
        assert v == pytest.approx(float(logged["val_" + k]), abs=1e-6), k
    dets = json.load(open(f"{root}/test_out.bbox.json"))
    assert dets and {d["category_id"] for d in dets} <= {1, 2, 3}


def test_resume_refusal_and_wrong_weights(trained, capsys):
    work, root = trained["work"], trained["root"]
    (work / "backup").mkdir(exist_ok=True)
    (work / "backup" / "latest.weights.h5").write_bytes(b"x")
    try:
        assert cli.main(["train", str(trained["config"]), "--data", str(root / "data"),
                         "--work-dir", str(work)]) == 2
        assert "pass --resume" in _err(capsys)[0]
    finally:
        (work / "backup" / "latest.weights.h5").unlink()
    assert cli.main(["test", str(trained["config"]), "--weights", str(root / "none.weights.h5"),
                     "--data", str(root / "data")]) == 2
    assert "weights file" in _err(capsys)[0]


@pytest.mark.slow
def test_export_from_work_dir(trained, capsys):
    """~80 s: three signatures traced (the export itself is tested in tests/export)."""
    import tensorflow as tf
    work, root = trained["work"], trained["root"]
    out = root / "exported" / "1"
    assert cli.main(["export", str(trained["config"]), "--weights",
                     str(work / "checkpoints" / "latest.weights.h5"), str(out)]) == 0
    assert "tensorflow/serving" in capsys.readouterr().out
    m = tf.saved_model.load(str(out))
    data = open(sorted((root / "data" / "images").glob("*.jpg"))[0], "rb").read()
    res = m.signatures["serving_default"](images=tf.constant([data]))
    labels = res["labels"].numpy()
    assert labels.shape == (1, 100) and labels.max() < 3          # num_classes from the run
    assert np.all(res["boxes"].numpy()[..., [0, 2]] <= 128)        # original-image pixels
    assert cli.main(["export", str(trained["config"]), "--weights",
                     str(work / "checkpoints" / "latest.weights.h5"), str(out)]) == 2
    assert "not empty" in _err(capsys)[0]
