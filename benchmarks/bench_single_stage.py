"""Speed of the single-stage detectors at 1333x800 on this machine (docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_single_stage.py [--models retinanet paa] [--repeats 3]

For RetinaNet RegNetX-3.2GF and PAA R-50 (COCO widths, 80 classes, input padded to
800x1344): inference latency (batch 1, ``tf.function``), one training step (batch 2,
``tf.function`` via ``model.fit``'s ``train_function``) and, for PAA, the time of its
assignment -- MaxIoU candidates, candidate losses and the GMM reassignment -- alone (the
same ``tf.function`` graph pieces, timed separately) as a share of the training step.
Ground truth: 10 random boxes per image in 100 padded slots (the COCO pipeline's N).
"""
import argparse
import json
import time

import numpy as np
import tensorflow as tf

import keras

H, W = 800, 1344
MODELS = {"retinanet": ("RetinaNet", "regnetx_3.2gf"), "paa": ("PAA", "resnet50")}


def _gt(batch, n_obj=10, slots=100, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [W - 300, H - 300], (batch, n_obj, 2))
    wh = rng.uniform(20, 300, (batch, n_obj, 2))
    boxes = np.zeros((batch, slots, 4), np.float32)
    labels = -np.ones((batch, slots), np.int32)
    boxes[:, :n_obj] = np.concatenate([xy, xy + wh], -1)
    labels[:, :n_obj] = rng.integers(0, 80, (batch, n_obj))
    return {"boxes": tf.constant(boxes), "labels": tf.constant(labels),
            "ignore": tf.zeros((batch, slots), tf.bool)}


def _time(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else x, out)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(kind, repeats):
    import kdet.models as models
    cls_name, backbone = MODELS[kind]
    model = getattr(models, cls_name)(backbone=backbone, num_classes=80)
    images1 = tf.random.normal([1, H, W, 3])
    images2 = tf.random.normal([2, H, W, 3])
    gt = _gt(2)
    model(images1)
    infer = tf.function(lambda x: model(x, training=False))
    res = {"model": f"{cls_name} {backbone}", "params_M": round(model.count_params() / 1e6, 2)}
    res["inference_s_per_img"] = _time(lambda: infer(images1), repeats)

    model.compile(optimizer=keras.optimizers.SGD(0.01))
    ds = tf.data.Dataset.from_tensors((images2, gt)).repeat()
    it = iter(ds)
    model.make_train_function()
    res["train_step_s_batch2"] = _time(lambda: model.train_function(it), repeats)

    if kind == "paa":
        head = model.bbox_head
        outputs = head(model.extract_features(images2))
        shapes = tf.fill([2, 2], 0.0) + tf.constant([[float(H), float(W)]])
        sizes = [(o.shape[1], o.shape[2]) for o in outputs["cls_scores"]]
        anchors = head.get_anchors(sizes, shapes)
        from kdet.heads.dense.base import flatten_levels

        @tf.function
        def assignment():
            t = head.get_targets(anchors, gt, shapes)
            cls = flatten_levels(outputs["cls_scores"], head.cls_out_channels)
            boxes = head.bbox_coder.decode(anchors.anchors[None],
                                           flatten_levels(outputs["bbox_preds"], 4))
            losses = head.candidate_losses(cls, boxes, t)
            return head.paa_reassign(losses, t, anchors.num_level_anchors, 100)

        t = head.get_targets(anchors, gt, shapes)
        cls = flatten_levels(outputs["cls_scores"], head.cls_out_channels)
        boxes = head.bbox_coder.decode(anchors.anchors[None],
                                       flatten_levels(outputs["bbox_preds"], 4))
        losses = head.candidate_losses(cls, boxes, t)
        gmm_only = tf.function(
            lambda: head.paa_reassign(losses, t, anchors.num_level_anchors, 100))
        res["paa_assignment_s"] = _time(assignment, repeats)
        res["paa_gmm_reassign_s"] = _time(gmm_only, repeats)
        res["paa_assignment_share_of_step"] = round(
            res["paa_assignment_s"] / res["train_step_s_batch2"], 3)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    for kind in a.models:
        print(json.dumps(bench(kind, a.repeats)), flush=True)


if __name__ == "__main__":
    main()
