"""`kdet export CONFIG --weights W OUT`: a SavedModel for TF Serving (see docs/export.md).

OUT should end in a version number for TF Serving (``models/mask_rcnn/1``)."""
from kdet.commands._zoo_common import add_config_arguments


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("out", metavar="OUT", help="SavedModel folder (e.g. exported/NAME/1)")
    parser.add_argument("--weights", required=True, metavar="W",
                        help="Keras .weights.h5 (kdet train's checkpoints) or an mmdet .pth")
    parser.add_argument("--data", metavar="DIR",
                        help="take the number of classes from this COCO-format folder")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="fixed padded input size (static shapes); default: pad each "
                             "batch to a multiple of 32")
    parser.add_argument("--max-image-size", type=int, default=8192,
                        help="refuse images whose longer side exceeds this (default 8192)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")


def run(args):
    from kdet.commands import _zoo_common as common
    from kdet.export import export_saved_model

    n = None
    if args.data:
        paths = common.data_paths(args.data)
        ann = paths["train_ann"] if common.os.path.exists(paths["train_ann"]) else paths["val_ann"]
        n = common.num_categories(ann)
    common.need(args.weights, "weights file")
    model, _, cfg = common.build_model(args, num_classes=n, weights=args.weights)
    path = export_saved_model(model, args.out, input_size=args.input_size,
                              max_image_size=args.max_image_size, overwrite=args.overwrite)
    print(f"kdet export: {cfg.name} ({model.num_classes} classes) -> {path}")
    print("  signatures: serving_default(images: tf.string [B] encoded JPEG/PNG), "
          "predict_pixels(uint8 [B,H,W,3]), predict_normalized(float32 [B,H,W,3])")
    base = common.os.path.dirname(common.os.path.abspath(str(path)))
    print(f"  serve: docker run -p 8501:8501 -v {base}:/models/{cfg.name} "
          f"-e MODEL_NAME={cfg.name} tensorflow/serving")
    return 0
