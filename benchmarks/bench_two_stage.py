"""Speed and memory of the two-stage detectors at 1333x800 on this machine (docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_two_stage.py [--models faster mask]
        [--modes eager function xla] [--repeats 2] [--size 800 1344] [--timeout 600]

For Faster R-CNN and Mask R-CNN RegNetX-3.2GF (COCO defaults, 80 classes, random weights,
float32, input 800x1344 = 1333x800 keep-ratio resize padded to a multiple of 32), in each
mode -- ``eager``, ``function`` (``tf.function``) and ``xla`` (``tf.function(jit_compile=True)``):

* inference latency, batch 1 (s/img): ``model(images, training=False)``;
* one training step, batch 2 (s/iter): Keras' own ``train_function`` (``Detector.train_step``:
  ``tf.GradientTape`` over ``compute_losses`` + SGD apply) after
  ``compile(optimizer=SGD, run_eagerly=mode == "eager", jit_compile=mode == "xla")``;
* peak memory: every (model, mode) runs in a fresh subprocess that reports its
  ``ru_maxrss``, so peaks do not accumulate; a subprocess past ``--timeout`` is reported as
  a timeout (with whatever it had measured before);
* in ``function`` mode also the backbone+FPN forward alone (``model.extract_feat``), for the
  target "heads + post-processing at most 50% on top of backbone+FPN"; the inference again
  with the R-CNN ``score_thr`` at 0 (``inference_100dets_s_per_img``): random weights score
  every class ~1/81 < 0.05, so with the default threshold nothing survives, the class-wise
  NMS is empty and the (static, 100-slot) mask head runs on padding -- at 0 every image
  returns its 100 detections, the load of a trained model on a busy image;
* the multiply-adds (``kdet.utils.count_flops``, mmcv's rules; RoI heads on 1000 proposals,
  mask head on 100 detections) of backbone+FPN and of the heads, the arithmetic floor of the
  heads' share.

Times are the median of ``--repeats`` runs after one warm-up (which traces / compiles).
Ground truth: 10 random boxes (and, for Mask R-CNN, full-image binary masks) per image in
100 padded slots (the COCO pipeline's N). kdet's custom ops dispatch to their pure-TF twins
under XLA (the RoIAlign twin is slow on CPU), so ``xla`` measures those twins.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_single_stage import _time  # noqa: E402  (median of repeats after a warm-up)

MODELS = {"faster": "FasterRCNN", "mask": "MaskRCNN"}
MODES = ("eager", "function", "xla")
BACKBONE = "regnetx_3.2gf"


def _gt(batch, h, w, with_masks, n_obj=10, slots=100, seed=0):
    """Padded ground truth (DESIGN.md): boxes [B, N, 4] xyxy, labels [B, N] (-1 = empty slot),
    masks [B, N, H, W] uint8 (image-sized, zero in empty slots)."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    size = np.array([w, h], np.float32)
    wh = rng.uniform(0.04, 0.3, (batch, n_obj, 2)) * size
    xy = rng.uniform(0, 1, (batch, n_obj, 2)) * (size - wh)
    boxes = np.zeros((batch, slots, 4), np.float32)
    labels = -np.ones((batch, slots), np.int32)
    boxes[:, :n_obj] = np.concatenate([xy, xy + wh], -1)
    labels[:, :n_obj] = rng.integers(0, 80, (batch, n_obj))
    gt = {"boxes": tf.constant(boxes), "labels": tf.constant(labels),
          "ignore": tf.zeros((batch, slots), tf.bool),
          "img_shape": tf.constant([[h, w]] * batch, tf.int32)}
    if with_masks:
        masks = np.zeros((batch, slots, h, w), np.uint8)
        ib = boxes.astype(int)
        for b in range(batch):
            for j in range(n_obj):
                x0, y0, x1, y1 = ib[b, j]
                masks[b, j, y0:y1, x0:x1] = 1
        gt["masks"] = tf.constant(masks)
    return gt


def _peak_mib():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def worker(kind, mode, repeats, h, w):
    """One (model, mode) in this process; prints one JSON line per finished measurement."""
    import tensorflow as tf
    import keras
    import kdet.models as models

    model = getattr(models, MODELS[kind])(backbone=BACKBONE, num_classes=80)
    name = f"{MODELS[kind]} {BACKBONE}"
    images1 = tf.random.normal([1, h, w, 3])
    images2 = tf.random.normal([2, h, w, 3])
    res = {"model": name, "mode": mode, "size": [h, w],
           "params_M": round(model.count_params() / 1e6, 2)}

    def emit(**kw):
        res.update(kw, peak_rss_MiB=_peak_mib())
        print(json.dumps(res), flush=True)

    def forward(x):
        return model(x, training=False)

    if mode == "eager":
        infer = forward
    else:
        infer = tf.function(forward, jit_compile=(mode == "xla"))
    emit(inference_s_per_img=_time(lambda: infer(images1), repeats))
    if mode == "function":
        feat = tf.function(lambda x: model.extract_feat(x, training=False))
        emit(backbone_fpn_s_per_img=_time(lambda: feat(images1), repeats))
        score_thr = model.roi_head.test_cfg["score_thr"]
        model.roi_head.test_cfg["score_thr"] = 0.0
        full = tf.function(forward)
        n = int(full(images1)["num_detections"][0])
        emit(inference_100dets_s_per_img=_time(lambda: full(images1), repeats), num_dets=n)
        model.roi_head.test_cfg["score_thr"] = score_thr
        emit(**_flops_split(model, h, w))

    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=(mode == "eager"),
                  jit_compile=(mode == "xla"))
    gt = _gt(2, h, w, with_masks=model.with_mask)
    it = iter(tf.data.Dataset.from_tensors((images2, gt)).repeat())
    model.make_train_function()
    emit(train_step_s_batch2=_time(lambda: model.train_function(it), repeats))


def _flops_split(model, h, w):
    """GMACs of backbone+FPN and of everything else (RPN, RoI heads) on one h x w image."""
    from kdet.utils import count_flops
    from kdet.utils.flops import _leaf_layers
    _, per_layer = count_flops(model, (h, w, 3), by_layer=True, include_head=True)
    body = {layer.name for part in (model.backbone, model.neck) for layer in _leaf_layers(part)}
    bb = sum(v for k, v in per_layer.items() if k in body)
    heads = sum(v for k, v in per_layer.items() if k not in body)
    return {"gmacs_backbone_fpn": round(bb / 1e9, 1), "gmacs_heads": round(heads / 1e9, 1)}


def run_one(kind, mode, a):
    """Runs ``worker`` in a fresh subprocess; returns its last result (+ status)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, mode,
           "--repeats", str(a.repeats), "--size", str(a.size[0]), str(a.size[1])]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        out, status = p.stdout, ("ok" if p.returncode == 0 else f"exit {p.returncode}")
        err = p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, status = "", f"timeout after {a.timeout} s"
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1]) if lines else {"model": f"{MODELS[kind]} {BACKBONE}",
                                               "mode": mode}
    res["status"] = status
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    if status.startswith("exit"):
        res["stderr_tail"] = err[-2000:]
    print(json.dumps(res), flush=True)
    return res


def _fmt(res, key):
    if key in res:
        if key == "peak_rss_MiB":
            return f"{res[key]:.0f}"
        return f"{res[key]:.3g}" if isinstance(res[key], float) else str(res[key])
    return "timeout" if res["status"].startswith("timeout") else "n/a"


def table(results):
    rows = ["| model | mode | inference, batch 1 (s/img) | train step, batch 2 (s/iter) "
            "| peak RSS (MiB) | status |", "|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['model']} | {r['mode']} | {_fmt(r, 'inference_s_per_img')} | "
                    f"{_fmt(r, 'train_step_s_batch2')} | {_fmt(r, 'peak_rss_MiB')} | "
                    f"{r['status']} |")
    lines = ["\n".join(rows)]
    for r in results:
        if "backbone_fpn_s_per_img" in r and "inference_s_per_img" in r:
            bb, full = r["backbone_fpn_s_per_img"], r["inference_s_per_img"]
            extra = 100 * (full - bb) / bb
            line = (f"{r['model']} ({r['mode']}): backbone+FPN {bb:.3g} s, full inference "
                    f"{full:.3g} s -> heads + post-processing = {extra:.0f}% on top of "
                    f"backbone+FPN (target <= 50%): {'met' if extra <= 50 else 'NOT met'}")
            if "inference_100dets_s_per_img" in r:
                full100 = r["inference_100dets_s_per_img"]
                line += (f"; with {r.get('num_dets')} detections (score_thr 0) {full100:.3g} s "
                         f"-> {100 * (full100 - bb) / bb:.0f}%")
            if "gmacs_heads" in r:
                line += (f"; multiply-adds: backbone+FPN {r['gmacs_backbone_fpn']} G, heads "
                         f"{r['gmacs_heads']} G -> "
                         f"{100 * r['gmacs_heads'] / r['gmacs_backbone_fpn']:.0f}%")
            lines.append(line)
    return "\n\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["faster", "mask"], choices=sorted(MODELS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--size", nargs=2, type=int, default=[800, 1344], metavar=("H", "W"))
    p.add_argument("--timeout", type=float, default=600, help="seconds per (model, mode)")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(*a.worker, a.repeats, *a.size)
        return
    results = [run_one(kind, mode, a) for mode in a.modes for kind in a.models]
    print()
    print(table(results))


if __name__ == "__main__":
    main()
