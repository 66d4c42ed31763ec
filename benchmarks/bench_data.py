"""Input-pipeline throughput (images/s) on the synthetic shapes dataset.

    python benchmarks/bench_data.py [--num-images 64] [--batches 20] [--image-size 480 640]

Resizes to MMDetection's (1333, 800) with masks, single-scale and multi-scale
(mstrain range [(1333, 640), (1333, 800)]); prints one line per setting: wall-clock
images/s and the process CPU time per image (less sensitive to other load on the machine;
cores / CPU-time = the rate on an otherwise idle machine).
"""
import argparse
import os
import tempfile
import time


def measure(ds, batches, batch_size):
    it = iter(ds)
    next(it)  # warm-up: graph tracing, first decode
    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        n += batch_size
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args(argv)
    from kdet.data import coco_dataset, make_shapes_dataset
    import tensorflow as tf
    root = os.path.join(tempfile.gettempdir(), f"kdet_bench_shapes_{args.num_images}_"
                        f"{args.image_size[0]}x{args.image_size[1]}")
    t = time.perf_counter()
    d = make_shapes_dataset(root, num_images=args.num_images, image_size=tuple(args.image_size),
                            seed=0, val_fraction=0.1)
    print(f"synthetic: {args.num_images} images {args.image_size[0]}x{args.image_size[1]} "
          f"written in {time.perf_counter() - t:.1f} s")
    print(f"cpu cores: {os.cpu_count()}, tf {tf.__version__}")
    settings = [
        ("single-scale (1333, 800), boxes only", dict()),
        ("single-scale (1333, 800), masks, N=100", dict(with_masks=True)),
        ("single-scale (1333, 800), masks, N=16", dict(with_masks=True, max_instances=16)),
        ("multi-scale range 640..800, masks, N=100",
         dict(with_masks=True, multiscale_mode="range",
              img_scales=[(1333, 640), (1333, 800)])),
        ("pad_to (1344, 1344), masks, N=100, mask_size (336, 336)",
         dict(with_masks=True, pad_to=(1344, 1344), mask_size=(336, 336))),
    ]
    for name, kw in settings:
        ds = coco_dataset(d.train_ann, d.image_dir, batch_size=args.batch_size, seed=0,
                          **kw).repeat()
        rate, cpu = measure(ds, args.batches, args.batch_size)
        print(f"{name:58s} {rate:7.1f} images/s  {cpu * 1e3:6.0f} CPU-ms/image")


if __name__ == "__main__":
    main()
