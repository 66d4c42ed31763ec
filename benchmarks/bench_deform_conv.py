"""Deformable convolution speed: C++ custom op vs pure-TF twin, forward and backward.

Workload (issue 3): DCNv2 3x3, 256 -> 256 channels, stride 1, padding 1, on a 100x168 map
(stride-8 level of an 800x1333 Mask R-CNN input), batch 1 and 2, float32.

    .venv/bin/python benchmarks/bench_deform_conv.py [--batch 1 2] [--repeats 5] [--v1]

Prints one line per (batch, implementation, pass) with the median wall time and process CPU
time (all threads) in ms, and the speed-ups of the custom op over the twin. Forward is
``deform_conv2d``; "fwd+bwd" is forward plus the gradients for input, offset, mask, weight and bias, both in a ``tf.function``.
"""
import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from kdet.ops import deform_conv2d


def _inputs(batch, height, width, channels, modulated, seed=0):
    rng = np.random.default_rng(seed)
    kp = 9
    return dict(
        x=tf.constant(rng.normal(size=(batch, height, width, channels)), tf.float32),
        offset=tf.constant(rng.normal(scale=2.0, size=(batch, height, width, 2 * kp)),
                           tf.float32),
        weight=tf.constant(rng.normal(scale=0.02, size=(3, 3, channels, channels)), tf.float32),
        bias=tf.constant(rng.normal(size=(channels,)), tf.float32),
        mask=tf.constant(rng.uniform(size=(batch, height, width, kp)), tf.float32)
        if modulated else None,
    )


def _functions(impl, modulated):
    def fwd(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, mask if modulated else None, padding=1,
                             implementation=impl)

    @tf.function
    def forward(x, offset, weight, bias, mask):
        return fwd(x, offset, weight, bias, mask)

    @tf.function
    def backward(x, offset, weight, bias, mask):
        ts = [x, offset, weight, bias] + ([mask] if modulated else [])
        with tf.GradientTape() as tape:
            tape.watch(ts)
            loss = tf.reduce_sum(fwd(x, offset, weight, bias, mask))
        return tape.gradient(loss, ts)

    return forward, backward


def _time(fn, args, repeats):
    """(median wall ms, median process-CPU ms) over `repeats` calls after a warm-up call.

    CPU time (all threads) is the steadier number on a shared machine; wall time is what a
    user waits on an idle one.
    """
    out = fn(**args)  # trace + warm up
    tf.nest.map_structure(lambda t: t.numpy(), out)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn(**args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, nargs=2, default=[100, 168], metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--v1", action="store_true", help="DCNv1 (no mask) instead of DCNv2")
    parser.add_argument("--impl", nargs="+", default=["custom", "tf"])
    args = parser.parse_args(argv)
    modulated = not args.v1
    print(f"DCN{'v2' if modulated else 'v1'} 3x3 {args.channels}->{args.channels}, "
          f"{args.size[0]}x{args.size[1]}, float32, TF {tf.__version__}, "
          f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}")
    for batch in args.batch:
        inputs = _inputs(batch, *args.size, args.channels, modulated)
        results = {}
        for impl in args.impl:
            forward, backward = _functions(impl, modulated)
            for name, fn in (("forward", forward), ("fwd+bwd", backward)):
                wall, cpu = _time(fn, inputs, args.repeats)
                results[(impl, name)] = (wall, cpu)
                print(f"batch {batch}  {impl:6s}  {name:8s}  wall {wall:9.1f} ms  "
                      f"cpu {cpu:9.1f} ms", flush=True)
        if "custom" in args.impl and "tf" in args.impl:
            for name in ("forward", "fwd+bwd"):
                (tw, tc), (cw, cc) = results[("tf", name)], results[("custom", name)]
                print(f"batch {batch}  speed-up custom/tf {name:8s}  wall {tw / cw:.2f}x  "
                      f"cpu {tc / cc:.2f}x")


if __name__ == "__main__":
    main()
