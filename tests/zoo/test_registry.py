"""kdet.zoo: the configs match the seeds' tables row by row; registry errors; recipes; build."""
import re

import pytest

from kdet import zoo
from kdet.errors import KdetError
from tests.conftest import SEEDS

# the download link names the real config: .../v2.0/<method>/<config name>/<file>.pth
_MODEL_URL = re.compile(r"download\.openmmlab\.com/mmdetection/v2\.0/(\w+)/([^/]+)/")


def _seed_rows(text):
    """{config name: {"box AP": float, "mask AP": ..., "Mem (GB)": ..., "Inf time (fps)": ...}}
    of every markdown table row with a model download link."""
    rows, header = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        m = _MODEL_URL.search(line)
        if not m or len(cells) != len(header):
            continue
        row = {}
        for key in ("box AP", "mask AP", "Mem (GB)", "Inf time (fps)"):
            if key in header:
                value = cells[header.index(key)]
                row[key] = float(value) if re.fullmatch(r"[\d.]+", value) else None
        rows[m.group(2)] = row
    return rows


def _seed_000():
    return _seed_rows((SEEDS / "000_f00d3e4ef827aa2d.txt").read_text())


def _seed_004_paa():
    text = (SEEDS / "004_20d547bd073a917b.txt").read_text()
    return _seed_rows(text.split("# Gradient Harmonized")[0])


def test_every_seed_row_is_a_config_with_the_seed_numbers():
    rows = {**_seed_000(), **_seed_004_paa()}
    assert len(rows) == 38          # 33 rows of seed 000 (3.2GF mstrain Mask R-CNN listed twice)
    assert set(rows) == set(zoo.list_configs())
    for name, row in rows.items():
        seed = zoo.get_config(name).seed
        assert seed.box_ap == row["box AP"], name
        assert seed.mask_ap == row.get("mask AP"), name
        assert seed.mem_gb == row["Mem (GB)"], name
        assert seed.fps == row.get("Inf time (fps)"), name


def test_link_text_and_file_names_differ_where_mmdetection_does():
    """The seed's config link for the mstrain-poly rows says mstrain_3x; the files (and the
    checkpoints) are mstrain-poly_3x, and that is what the zoo uses."""
    names = zoo.list_configs()
    assert "mask_rcnn_regnetx-4GF_fpn_mstrain-poly_3x_coco" in names
    assert "mask_rcnn_regnetx-4GF_fpn_mstrain_3x_coco" not in names
    assert "mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco" in names


def test_recipes_follow_the_mmdetection_configs():
    for name in zoo.list_configs():
        cfg = zoo.get_config(name)
        r = cfg.recipe
        assert cfg.name == name and name in cfg.source
        regnet = cfg.backbone.startswith("regnetx")
        assert r.weight_decay == (5e-5 if regnet else 1e-4), name      # seed 000 notice 1
        assert r.momentum == 0.9 and r.batch_size == 16
        assert r.with_masks == ("mask_rcnn" in name), name
        assert (r.train_scales is not None) == ("mstrain" in name), name
        assert cfg.backbone_kwargs["frozen_stages"] == 1 and cfg.backbone_kwargs["norm_eval"]
        assert (cfg.not_implemented is not None) == name.startswith("cascade"), name
        if name.startswith("retinanet_regnetx"):                      # seed 000 notice 2
            assert r.base_lr == 0.02 and r.grad_clip == 35.0
        if name.startswith(("paa", "retinanet_r50")):
            assert r.base_lr == 0.01 and r.grad_clip is None
        if "poly" in name:
            assert r.multiscale_mode == "range" and not r.poly2mask and r.grad_clip == 35.0
        epochs = {"_1x_": 12, "_1.5x_": 18, "_2x_": 24, "_3x_": 36}
        assert r.max_epochs == [v for k, v in epochs.items() if k in name][0], name
    paa15 = zoo.get_config("paa_r50_fpn_1.5x_coco").recipe
    from kdet.training.schedules import _parse
    assert _parse(paa15.schedule) == (18, (12, 16))                 # paa_r50_fpn_1.5x_coco.py
    ms = zoo.get_config("mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco").recipe
    assert _parse(ms.schedule) == (36, (28, 34)) and ms.multiscale_mode == "value"
    assert len(ms.train_scales) == 6 and ms.img_norm == zoo.PYCLS_NORM


@pytest.mark.slow
def test_fpn_in_channels_are_the_backbones_channels():
    """Every distinct backbone (11, up to RegNetX-12GF) built: ~2 min on 2 cores."""
    from kdet.backbones import build_backbone
    seen = {}
    for name in zoo.list_configs():
        cfg = zoo.get_config(name)
        if cfg.backbone not in seen:
            bb = build_backbone(cfg.backbone, out_indices=(0, 1, 2, 3))
            seen[cfg.backbone] = tuple(bb.out_channels)
        assert seen[cfg.backbone] == tuple(cfg.fpn_in_channels), name


def test_unknown_name_lists_close_matches():
    with pytest.raises(KdetError, match="did you mean mask_rcnn_regnetx-3.2GF_fpn_1x_coco"):
        zoo.get_config("mask_rcnn_regnetx-3.2GF_fpn_1x")
    with pytest.raises(KdetError, match="kdet zoo list"):
        zoo.build("yolo_v99")


def test_cascade_rows_are_listed_but_do_not_build():
    assert "cascade_mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco" in zoo.list_configs("regnet")
    with pytest.raises(KdetError, match="not implemented"):
        zoo.build("cascade_mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco")


def test_recipe_lr_scaling_and_optimizer():
    r = zoo.get_config("retinanet_regnetx-800MF_fpn_1x_coco").recipe
    assert r.lr(2) == pytest.approx(0.0025) and r.lr() == 0.02
    opt = r.optimizer(steps_per_epoch=100, batch_size=2)
    assert opt.clip_global_norm == 35.0 and opt.l2 == 5e-5
    lr = opt._learning_rate          # the LearningRateSchedule
    assert float(lr(0)) == pytest.approx(0.0025 * 0.001)          # linear warmup start
    assert float(lr(100 * 11 + 1)) == pytest.approx(0.0025 * 0.01)  # after both milestones
    kw = zoo.get_config("mask_rcnn_regnetx-400MF_fpn_mstrain-poly_3x_coco").recipe \
        .dataset_kwargs(training=True)
    assert kw["img_scales"] == [(1333, 640), (1333, 800)] and kw["multiscale_mode"] == "range"
    with pytest.raises(KdetError, match="unknown recipe field"):
        r.replace(learning_rate=1)


def test_config_file_path_and_bad_files(tmp_path):
    good = tmp_path / "tiny_retinanet.py"
    good.write_text(
        "from kdet.zoo import PYCLS_NORM, Recipe, SeedResult, ZooConfig\n"
        "CONFIG = ZooConfig(name='tiny_retinanet', model='RetinaNet', backbone='regnetx_400mf',\n"
        "    backbone_kwargs=dict(frozen_stages=1, norm_eval=True), source='test',\n"
        "    fpn_in_channels=(32, 64, 160, 384),\n"
        "    recipe=Recipe(img_scale=(128, 96), img_norm=PYCLS_NORM), seed=SeedResult())\n")
    model, recipe = zoo.build(str(good), num_classes=3, img_scale=(160, 128),
                              head={"test_cfg": {"score_thr": 0.1}})
    assert type(model).__name__ == "RetinaNet" and model.num_classes == 3
    assert model.preprocessing["style"] == "pycls" and model.preprocessing["to_rgb"] is False
    assert model.preprocessing["img_scale"] == [160, 128] and recipe.img_scale == (160, 128)
    assert model.bbox_head.test_cfg["score_thr"] == 0.1
    bad = tmp_path / "bad.py"
    bad.write_text("CONFIG = dict(model='RetinaNet')\n")
    with pytest.raises(KdetError, match="defines no CONFIG"):
        zoo.get_config(str(bad))
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_module_xyz\n")
    with pytest.raises(KdetError, match="failed to load.*ModuleNotFoundError"):
        zoo.get_config(str(broken))
    wrong = tmp_path / "wrong.py"
    wrong.write_text(good.read_text().replace("(32, 64, 160, 384)", "(32, 64, 160, 999)"))
    with pytest.raises(KdetError, match="FPN in_channels"):
        zoo.build(str(wrong), num_classes=3)
