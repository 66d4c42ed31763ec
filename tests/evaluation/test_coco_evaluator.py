"""COCOEvaluator: AP 1.0 on ground truth, parity with pycocotools on a hand-built case,
empty detections, bad input."""
import contextlib
import io
import json

import numpy as np
import pytest

from conftest import IMAGES, gt_masks
from kdet.errors import KdetError
from kdet.evaluation import COCOEvaluator, metric_names

CAT_IDS = [1, 3, 7]     # sorted category ids: label i <-> CAT_IDS[i]


def _batch(dets_per_image, img_ids, scales, max_dets=6, masks=None):
    """Detections in original pixels -> padded network-input predictions + meta.

    dets_per_image: per image a list of (x1, y1, x2, y2, score, category_id).
    scales: per image (sy, sx) resized/original.
    masks: optional per image [K, mh, mw] arrays (padded to max_dets).
    """
    b = len(img_ids)
    boxes = np.zeros((b, max_dets, 4), np.float32)
    scores = np.zeros((b, max_dets), np.float32)
    labels = np.full((b, max_dets), -1, np.int32)
    num = np.zeros((b,), np.int32)
    for i, dets in enumerate(dets_per_image):
        sy, sx = scales[i]
        for j, (x1, y1, x2, y2, s, c) in enumerate(dets):
            boxes[i, j] = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
            scores[i, j] = s
            labels[i, j] = CAT_IDS.index(c)
        num[i] = len(dets)
    sizes = {im["id"]: (im["height"], im["width"]) for im in IMAGES}
    meta = {"image_id": np.array(img_ids, np.int64),
            "scale_factor": np.array(scales, np.float32),
            "orig_size": np.array([sizes[i] for i in img_ids], np.int32)}
    preds = {"boxes": boxes, "scores": scores, "labels": labels, "num_detections": num}
    if masks is not None:
        mh, mw = masks[0].shape[1:]
        m = np.zeros((b, max_dets, mh, mw), np.float32)
        for i, mk in enumerate(masks):
            m[i, :len(mk)] = mk
        preds["masks"] = m
    return preds, meta


def _cocoeval_direct(coco_dict, results, iou_type, img_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(coco_dict))
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ground_truth_as_detections_gives_ap_1(ann_file, coco_dict):
    ev = COCOEvaluator(ann_file, iou_types=("bbox", "segm"), verbose=False)
    assert ev.backend in ("pycocotools", "faster_coco_eval")
    # Images 10 and 12 at scale 2 with image-sized masks at network resolution
    # (nearest-upsampled x2, which bilinear resizing maps back exactly); image 11 at
    # scale 1. The crowd region is not a detection.
    for img_id, s in ((10, 2.0), (11, 1.0), (12, 2.0), (13, 1.0)):
        masks, anns = gt_masks(coco_dict, img_id)
        dets = [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                 a["bbox"][1] + a["bbox"][3], 0.9, a["category_id"]) for a in anns]
        k = int(s)
        net_masks = masks.repeat(k, axis=1).repeat(k, axis=2).astype(np.float32)
        h, w = net_masks.shape[1:]
        padded = np.zeros((len(anns), h + 7, w + 5), np.float32)   # batch padding
        padded[:, :h, :w] = net_masks
        preds, meta = _batch([dets], [img_id], [(s, s)], masks=[padded])
        meta["img_shape"] = np.array([[h, w]], np.int32)
        ev.update(preds, meta)
    metrics = ev.evaluate()
    assert sorted(metrics) == sorted(metric_names(("bbox", "segm")))
    for t in ("bbox", "segm"):
        assert metrics[f"{t}_mAP"] == pytest.approx(1.0)
        assert metrics[f"{t}_mAP_50"] == pytest.approx(1.0)
        assert metrics[f"{t}_AR@100"] == pytest.approx(1.0)
    assert "Average Precision" in ev.summary


HAND_DETS = {
    10: [(5, 6, 35, 26, 0.95, 3),          # matches ann 1
         (21, 14, 49, 41, 0.90, 3),        # matches ann 2 (IoU ~0.87)
         (8, 8, 36, 30, 0.80, 3),          # duplicate of ann 1 -> false positive
         (50, 30, 74, 56, 0.70, 7),        # triangle's box
         (60, 2, 78, 12, 0.65, 1)],        # false positive, class without gt here
    11: [(4, 5, 16, 17, 0.85, 1),          # matches ann 4
         (2, 27, 20, 48, 0.60, 1),         # inside the crowd region -> ignored
         (1, 1, 39, 49, 0.30, 3)],         # false positive
    12: [(11, 12, 49, 52, 0.75, 7),
         (2, 49, 11, 58, 0.50, 7)],        # right place, wrong class
    13: [],                                # image without objects or detections
}


def test_hand_built_case_matches_pycocotools(tmp_path, ann_file, coco_dict):
    prefix = str(tmp_path / "out" / "results")
    ev = COCOEvaluator(ann_file, outfile_prefix=prefix, verbose=False)
    scales = {10: (0.5, 0.5), 11: (1.5, 2.0), 12: (1.0, 1.0), 13: (2.0, 2.0)}
    for ids in ([10, 11], [12, 13]):       # two batches
        preds, meta = _batch([HAND_DETS[i] for i in ids], ids, [scales[i] for i in ids])
        ev.update(preds, meta)
    metrics = ev.evaluate()
    expected = [{"image_id": i, "category_id": c, "score": s, "bbox": [x1, y1, x2 - x1, y2 - y1]}
                for i, dets in HAND_DETS.items() for (x1, y1, x2, y2, s, c) in dets]
    stats = _cocoeval_direct(coco_dict, expected, "bbox", [10, 11, 12, 13])
    got = [metrics[k] for k in metric_names(("bbox",))]
    np.testing.assert_allclose(got, stats, atol=1e-6)
    assert 0.3 < metrics["bbox_mAP"] < 0.95      # a non-trivial case
    written = json.load(open(prefix + ".bbox.json"))
    assert len(written) == len(expected)
    np.testing.assert_allclose(sorted(d["bbox"][0] for d in written),
                               sorted(d["bbox"][0] for d in expected), atol=1e-4)


def test_segm_with_box_masks_matches_pycocotools(ann_file, coco_dict):
    from pycocotools import mask as mask_utils
    from kdet.ops.masks import paste_masks_numpy
    rng = np.random.default_rng(0)
    ev = COCOEvaluator(ann_file, iou_types=("segm",), verbose=False)
    expected = []
    for img_id in (10, 11, 12, 13):
        dets = HAND_DETS[img_id]
        probs = rng.uniform(0.2, 1.0, (len(dets), 28, 28)).astype(np.float32)
        preds, meta = _batch([dets], [img_id], [(1.0, 1.0)], masks=[probs if dets else
                                                                     np.zeros((0, 28, 28))])
        ev.update(preds, meta)
        h, w = meta["orig_size"][0]
        if dets:
            full = paste_masks_numpy(probs, np.array([d[:4] for d in dets], np.float32), (h, w))
            for m, d in zip(full, dets):
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode()
                expected.append({"image_id": img_id, "category_id": d[5], "score": d[4],
                                 "segmentation": rle})
    metrics = ev.evaluate()
    stats = _cocoeval_direct(coco_dict, expected, "segm", [10, 11, 12, 13])
    np.testing.assert_allclose([metrics[k] for k in metric_names(("segm",))], stats, atol=1e-6)
    assert metrics["segm_mAP"] > 0


def test_no_detections_at_all(ann_file):
    ev = COCOEvaluator(ann_file, iou_types=("bbox", "segm"), verbose=False)
    preds, meta = _batch([[], [], [], []], [10, 11, 12, 13], [(1.0, 1.0)] * 4,
                         masks=[np.zeros((0, 28, 28))] * 4)
    ev.update(preds, meta)
    metrics = ev.evaluate()
    assert metrics["bbox_mAP"] == 0.0 and metrics["segm_mAP"] == 0.0
    assert metrics["bbox_AR@100"] == 0.0
    # No large ground truth in the 4 images -> COCOeval's "undefined" -1.
    assert metrics["bbox_mAP_l"] == -1.0


def test_image_without_detections_counts_its_ground_truth(ann_file):
    ev = COCOEvaluator(ann_file, verbose=False)
    preds, meta = _batch([HAND_DETS[10], []], [10, 12], [(1.0, 1.0)] * 2)
    ev.update(preds, meta)
    m_with_empty = ev.evaluate()["bbox_AR@100"]
    ev.reset()
    preds, meta = _batch([HAND_DETS[10]], [10], [(1.0, 1.0)])
    ev.update(preds, meta)
    assert ev.image_ids == [10]
    m_alone = ev.evaluate()["bbox_AR@100"]
    assert m_with_empty < m_alone      # image 12's missed objects lower recall


def test_gt_given_as_coco_object(coco_dict):
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = coco_dict
    coco.createIndex()
    ev = COCOEvaluator(coco, verbose=False)
    assert ev.cat_ids == CAT_IDS


def test_bad_input(ann_file, tmp_path):
    with pytest.raises(KdetError, match="not found"):
        COCOEvaluator(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KdetError, match="not valid json"):
        COCOEvaluator(str(bad))
    with pytest.raises(KdetError, match="iou_types"):
        COCOEvaluator(ann_file, iou_types=("keypoints",))
    with pytest.raises(KdetError, match="backend"):
        COCOEvaluator(ann_file, backend="detectron")
    ev = COCOEvaluator(ann_file, iou_types=("bbox", "segm"), verbose=False)
    with pytest.raises(KdetError, match="before any update"):
        ev.evaluate()
    preds, meta = _batch([HAND_DETS[10]], [10], [(1.0, 1.0)])
    with pytest.raises(KdetError, match="masks"):
        ev.update(preds, meta)
    ev = COCOEvaluator(ann_file, verbose=False)
    preds, meta = _batch([HAND_DETS[10]], [10], [(1.0, 1.0)])
    meta["image_id"][0] = 99
    with pytest.raises(KdetError, match="image_id 99"):
        ev.update(preds, meta)
    preds, meta = _batch([HAND_DETS[10]], [10], [(1.0, 1.0)])
    preds["labels"][0, 0] = 3
    with pytest.raises(KdetError, match="out of range"):
        ev.update(preds, meta)
    del meta["scale_factor"]
    with pytest.raises(KdetError, match="scale_factor"):
        ev.update(preds, meta)


def test_faster_coco_eval_gives_identical_numbers(ann_file):
    pytest.importorskip("faster_coco_eval", reason="optional faster-coco-eval not installed")
    out = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        ev = COCOEvaluator(ann_file, backend=backend, verbose=False)
        preds, meta = _batch([HAND_DETS[i] for i in (10, 11, 12)], [10, 11, 12],
                             [(1.0, 1.0)] * 3)
        ev.update(preds, meta)
        out[backend] = ev.evaluate()
    for k, v in out["pycocotools"].items():
        assert out["faster_coco_eval"][k] == pytest.approx(v, abs=1e-9), k
