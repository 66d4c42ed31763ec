"""Measures every zoo config's parameters and GFLOPs at 1344x800 -> kdet/zoo/zoo_table.json.

`kdet zoo list` reads that file (it says when and where it was measured). Configs sharing an
architecture (same model class, backbone and options; 1x / 2x / 3x differ only in the recipe)
are measured once. num_classes=80 (COCO). GFLOPs are multiply-adds of one forward pass on one
1344x800 image (1333x800 padded to a multiple of 32, as the data pipeline pads it) counted by
kdet.utils.count_flops over every leaf Keras layer the forward calls (convs, FCs, norms,
activations; RoI heads count their 1000 proposals); ops outside layers (NMS, RoIAlign, box
decoding) are not counted. MMDetection's get_flops counts the same way (MACs of modules).

    python benchmarks/zoo_table.py [--only NAME ...] [--no-flops]
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kdet", "zoo",
                   "zoo_table.json")
INPUT = (800, 1344, 3)


def arch_key(cfg):
    return json.dumps([cfg.model, cfg.backbone, cfg.backbone_kwargs, cfg.model_kwargs],
                      sort_keys=True, default=str)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="config names (default: all)")
    p.add_argument("--no-flops", action="store_true")
    args = p.parse_args(argv)
    import keras
    import tensorflow as tf
    import kdet
    from kdet.utils import count_flops

    table = {}
    if os.path.exists(OUT):
        table = json.load(open(OUT))
    rows = table.setdefault("rows", {})
    table.update(input_hw=list(INPUT[:2]), num_classes=80,
                 machine=f"{platform.machine()} {os.cpu_count()} CPU, TF {tf.__version__}, "
                         f"keras {keras.__version__}",
                 note="params: model.count_params(); gflops: multiply-adds / 1e9 of one "
                      "forward at input_hw (kdet.utils.count_flops, layers only)")
    done = {}
    for name in args.only or kdet.zoo.list_configs():
        cfg = kdet.zoo.get_config(name)
        if cfg.not_implemented:
            rows[name] = {"builds": False, "error": cfg.not_implemented}
            continue
        key = arch_key(cfg)
        if key not in done:
            t0 = time.time()
            row = {}
            try:
                keras.backend.clear_session()
                model, _ = cfg.build(num_classes=80)
                row.update(builds=True, params=int(model.count_params()))
                if not args.no_flops:
                    row["gflops"] = round(count_flops(model, INPUT) / 1e9, 1)
            except Exception as e:   # a benchmark records failures instead of stopping
                row.update(builds=row.get("builds", False),
                           error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            row["measured"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
            row["seconds"] = round(time.time() - t0, 1)
            done[key] = row
            print(name, row, flush=True)
        rows[name] = dict(done[key])
        with open(OUT, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
