"""`kdet demo`: the README demo.

Default: Mask R-CNN (RegNetX-400MF, random init) trained on the synthetic shapes dataset
(`kdet.commands.synthetic_recipe`), the COCO bbox / segm table of its held-out split, a PNG
of predictions (boxes + masks on validation images) and a SavedModel for TF Serving.

`kdet demo --table`: builds every RegNet (and the ResNet/ResNeXt baselines) as an ImageNet
classifier, counts parameters and FLOPs the way MMClassification does, and prints them next
to the published table (seed 002).
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
    parser.add_argument("--table", action="store_true",
                        help="print the RegNet params/FLOPs table instead of training a detector")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="synthetic images to generate (default: the recipe's)")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--archs", nargs="*", default=None,
                        help="backbone names to tabulate (default: all RegNets + ResNet baselines)")


def _fmt(value, printed):
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value:.{decimals}f}"


def run(args):
    if getattr(args, "table", False) or getattr(args, "archs", None):  # --archs implies --table
        return run_table(args)
    return run_detector(args)


def run_detector(args):
    """Train Mask R-CNN on the synthetic dataset, evaluate, draw predictions, export."""
    from kdet.commands import synthetic_recipe as recipe

    os.makedirs(args.out, exist_ok=True)
    kwargs = {}
    if getattr(args, "epochs", None):
        kwargs["epochs"] = args.epochs
    if getattr(args, "num_images", None):
        kwargs["num_images"] = args.num_images
    data_dir = os.path.join(args.out, "shapes")
    print(f"Mask R-CNN RegNetX-400MF from scratch on the synthetic shapes dataset ({data_dir})",
          flush=True)
    result = recipe.train(data_dir, verbose=2, **kwargs)
    metrics = result["metrics"]
    print(f"\ntrained {result['steps']} steps in {result['train_seconds']:.0f} s (with evaluation)"
          f"; held-out bbox mAP {metrics.get('bbox_mAP', float('nan')):.3f}, segm mAP "
          f"{metrics.get('segm_mAP', float('nan')):.3f}", flush=True)
    model_path = os.path.join(args.out, "mask_rcnn.keras")
    result["model"].save(model_path)
    print(f"saved {model_path}", flush=True)
    png = recipe.draw_predictions(result["model"], result["val_dataset"],
                                  os.path.join(args.out, "predictions.png"))
    print(f"wrote {png}", flush=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        import json
        json.dump({"metrics": metrics, "train_seconds": result["train_seconds"],
                   "steps": result["steps"]}, f, indent=1)
    if not getattr(args, "no_export", False):
        try:
            from kdet.export import export_saved_model
        except ImportError as e:  # pragma: no cover - the export package is part of kdet
            print(f"SavedModel export unavailable: {e}")
        else:
            path = export_saved_model(result["model"], os.path.join(args.out, "saved_model", "1"),
                                      overwrite=True)
            print(f"exported SavedModel to {path} (TF Serving: see docs/export.md)", flush=True)
    return 0


def run_table(args):
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
