"""`kdet demo`: the README demo.

Builds every RegNet (and the ResNet/ResNeXt baselines) as an ImageNet classifier, counts
parameters and FLOPs the way MMClassification does, and prints them next to the published
table (seed 002). When the detectors land, the demo trains one on the synthetic dataset.
"""
import os
import time

# MMClassification RegNet README (seed 002), ImageNet-1k at 224x224: Params(M), Flops(G).
MMCLS_TABLE = {
    "regnetx_400mf": ("5.16", "0.41"), "regnetx_800mf": ("7.26", "0.81"),
    "regnetx_1.6gf": ("9.19", "1.63"), "regnetx_3.2gf": ("15.3", "3.21"),
    "regnetx_4.0gf": ("22.12", "4.0"), "regnetx_6.4gf": ("26.21", "6.51"),
    "regnetx_8.0gf": ("39.57", "8.03"), "regnetx_12gf": ("46.11", "12.15"),
}


def add_arguments(parser):
    parser.add_argument("--out", default="demo_output", help="folder for the demo's files")
    parser.add_argument("--archs", nargs="*", default=None,
                        help="backbone names to tabulate (default: all RegNets + ResNet baselines)")


def _fmt(value, printed):
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value:.{decimals}f}"


def run(args):
    from kdet.backbones import backbone_names
    from kdet.models import ImageClassifier
    from kdet.utils import count_flops, count_params

    os.makedirs(args.out, exist_ok=True)
    names = args.archs or backbone_names()
    header = (f"| {'model':17s} | params (M) | seed params | FLOPs (G) @224 | seed FLOPs | match |\n"
              f"|{'-' * 19}|-----------:|------------:|---------------:|-----------:|:-----:|")
    print("Building ImageNet classifiers (1000 classes) and counting params/FLOPs "
          "(mmcv rules, see kdet.utils.flops)...", flush=True)
    lines = [header]
    print(header, flush=True)
    mismatches = checked = 0
    for name in names:
        t0 = time.time()
        model = ImageClassifier(name, num_classes=1000)
        params = count_params(model) / 1e6
        flops = count_flops(model, (224, 224, 3)) / 1e9
        seed = MMCLS_TABLE.get(name)
        if seed:
            ok = _fmt(params, seed[0]) == seed[0] and _fmt(flops, seed[1]) == seed[1]
            mismatches += not ok
            checked += 1
            cells = (seed[0], seed[1], "yes" if ok else "NO")
        else:
            cells = ("-", "-", "n/a")
        line = (f"| {name:17s} | {params:10.2f} | {cells[0]:>11s} | {flops:14.2f} | "
                f"{cells[1]:>10s} | {cells[2]:^5s} |")
        lines.append(line)
        print(line + f"   ({time.time() - t0:.1f}s)", flush=True)
        del model
    path = os.path.join(args.out, "regnet_params_flops.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nwrote {path}; {checked - mismatches}/{checked} seed rows match "
          "to the printed digits")
    return 1 if mismatches else 0
