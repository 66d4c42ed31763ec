"""RoIAlign speed: the C++ op vs the pure-TF twin (graph mode and XLA), forward and backward.

Mask R-CNN-sized work on a 4-level FPN (strides 4, 8, 16, 32; 256 channels) of an 800x1333
image: 512 RoIs to 7x7 (bbox head) and 100 RoIs to 14x14 (mask head), each RoI pooled from
the level mmdet's SingleRoIExtractor picks (finest_scale 56), aligned=True, sampling_ratio=0.

    python benchmarks/bench_roi_align.py [--repeats 5] [--xla]
"""
import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

import kdet.ops as ops
from kdet.custom_ops import build

STRIDES = (4, 8, 16, 32)
IMAGE = (800, 1333)
CHANNELS = 256


def fpn_features(rng):
    return [tf.constant(rng.normal(size=(1, math.ceil(IMAGE[0] / s), math.ceil(IMAGE[1] / s),
                                         CHANNELS)).astype(np.float32)) for s in STRIDES]


def random_rois(rng, k):
    """Boxes with log-uniform sizes 16..800 px inside the image, split by mmdet's level rule."""
    scale = np.exp(rng.uniform(math.log(16), math.log(800), k))
    ratio = np.exp(rng.uniform(math.log(0.5), math.log(2), k))
    w, h = scale * np.sqrt(ratio), scale / np.sqrt(ratio)
    x1 = rng.uniform(0, np.maximum(IMAGE[1] - w, 1))
    y1 = rng.uniform(0, np.maximum(IMAGE[0] - h, 1))
    boxes = np.stack([np.zeros(k), x1, y1, np.minimum(x1 + w, IMAGE[1]),
                      np.minimum(y1 + h, IMAGE[0])], 1).astype(np.float32)
    area = np.sqrt((boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]))
    level = np.clip(np.floor(np.log2(area / 56 + 1e-6)), 0, 3).astype(int)
    return [tf.constant(boxes[level == i]) for i in range(4)]


def make_step(feats, rois, out, impl, backward, jit):
    def step():
        with tf.GradientTape() as tape:
            tape.watch(feats)
            pooled = [ops.roi_align(f, r, out, 1.0 / s, 0, True, implementation=impl)
                      for f, r, s in zip(feats, rois, STRIDES)]
            loss = tf.add_n([tf.reduce_sum(p) for p in pooled])
        # Reduce to scalars in the graph, so that the timing is compute, not the copy of
        # ~90 MB of feature gradients to numpy.
        if backward:
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, feats)])
        return loss
    return tf.function(step, jit_compile=jit)


def timeit(fn, repeats):
    fn()  # trace / compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        float(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xla", action="store_true", help="also time the twin under XLA")
    args = parser.parse_args()
    if build.load_library() is None:
        raise SystemExit(f"custom op unavailable: {build.info()['reason']}")
    rng = np.random.default_rng(0)
    feats = fpn_features(rng)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU threads, TF {tf.__version__}, "
          f"GPU: {bool(tf.config.list_physical_devices('GPU'))}")
    variants = [("custom op", "custom", False), ("TF twin", "tf", False)]
    if args.xla:
        variants.append(("TF twin, XLA", "tf", True))
    print("| work | pass | " + " | ".join(v[0] for v in variants) + " | twin / op |")
    print("|---|---|" + "---|" * len(variants) + "---|")
    for k, out in ((512, 7), (100, 14)):
        rois = random_rois(rng, k)
        for backward in (False, True):
            ms = [1000 * timeit(make_step(feats, rois, out, impl, backward, jit), args.repeats)
                  for _, impl, jit in variants]
            cells = " | ".join(f"{m:.1f} ms" for m in ms)
            print(f"| {k} RoIs -> {out}x{out} | {'fwd+bwd' if backward else 'fwd'} | {cells} "
                  f"| {ms[1] / ms[0]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
