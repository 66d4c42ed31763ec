"""Train Mask R-CNN (RegNetX-400MF, from scratch) on kdet's synthetic shapes dataset.

    python examples/train_synthetic_mask_rcnn.py --out /tmp/shapes_run [--epochs 10]

The recipe (and every deviation from MMDetection's COCO recipe) lives in
``kdet.commands.synthetic_recipe``; ``kdet demo`` runs the same function and also draws the
predictions and exports a SavedModel.
"""
import argparse
import json
import os

from kdet.commands import synthetic_recipe as recipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="synthetic_mask_rcnn")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args()
    kwargs = {k: v for k, v in (("epochs", args.epochs), ("learning_rate", args.lr)) if v}
    result = recipe.train(os.path.join(args.out, "shapes"), verbose=2, **kwargs)
    result["model"].save(os.path.join(args.out, "mask_rcnn.keras"))
    recipe.draw_predictions(result["model"], result["val_dataset"],
                            os.path.join(args.out, "predictions.png"))
    print(json.dumps({"bbox_mAP": result["metrics"].get("bbox_mAP"),
                      "segm_mAP": result["metrics"].get("segm_mAP"),
                      "train_seconds": round(result["train_seconds"])}))


if __name__ == "__main__":
    main()
