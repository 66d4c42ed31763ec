"""`kdet test CONFIG --weights W --data DIR`: COCO metrics of trained weights (mmdet's
tools/test.py --eval bbox segm)."""
from kdet.commands._zoo_common import add_config_arguments


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, metavar="W",
                        help="Keras .weights.h5 (kdet train's checkpoints) or an mmdet .pth")
    parser.add_argument("--data", required=True, metavar="DIR", help="COCO-format folder")
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="annotations to evaluate on (default val)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step")
    parser.add_argument("--out", metavar="PREFIX",
                        help="write PREFIX.bbox.json (+ .segm.json) COCO results and "
                             "PREFIX.metrics.json")


def run(args):
    import json

    import numpy as np

    from kdet.commands import _zoo_common as common
    from kdet.errors import KdetError
    from kdet.evaluation import COCOEvaluator

    if args.batch_size < 1:
        raise KdetError(f"--batch-size must be >= 1, got {args.batch_size}")
    paths = common.data_paths(args.data)
    ann = common.need(paths[f"{args.split}_ann"], f"{args.split} annotations")
    common.need(args.weights, "weights file")
    model, recipe, cfg = common.build_model(args, num_classes=common.num_categories(ann),
                                            weights=args.weights)
    ds, ann = common.dataset(paths, args.split, recipe, model, args.batch_size, training=False)
    iou_types = ("bbox", "segm") if recipe.with_masks else ("bbox",)
    evaluator = COCOEvaluator(ann, iou_types=iou_types, outfile_prefix=args.out, verbose=True)
    n = 0
    for images, gt in ds:
        out = model(images, training=False, img_shape=gt["img_shape"])
        evaluator.update({k: np.asarray(v) for k, v in out.items()},
                         {k: np.asarray(v) for k, v in gt.items()})
        n += int(images.shape[0])
    print(f"kdet test: {cfg.name} on {n} images of {ann}")
    metrics = evaluator.evaluate()
    metrics = {k: float(v) for k, v in metrics.items()}
    for k, v in metrics.items():
        print(f"{k} = {v:.4f}")
    if args.out:
        with open(f"{args.out}.metrics.json", "w") as f:
            json.dump(metrics, f, indent=1)
    return 0
