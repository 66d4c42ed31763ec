"""`kdet data synth OUT` writes the synthetic shapes dataset; `kdet data info ANN IMAGES`
summarises a COCO-format dataset as the pipeline will read it."""


def add_arguments(parser):
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("synth", help="write the synthetic COCO-format shapes dataset",
                       description="Write JPEG images of coloured shapes plus "
                       "annotations/instances_{train,val}.json under OUT.")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--num-images", type=int, default=200, help="total images (default 200)")
    p.add_argument("--image-size", type=int, nargs="+", default=[256], metavar="S",
                   help="S (square) or H W in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of images in the val split (default 0.2)")
    p.add_argument("--max-objects", type=int, default=6, help="objects per image at most")
    p = sub.add_parser("info", help="summarise a COCO-format dataset",
                       description="Read ANN with IMAGES as the pipeline does (warnings for "
                       "skipped or repaired samples) and print counts.")
    p.add_argument("ann_file", metavar="ANN", help="instances json")
    p.add_argument("image_dir", metavar="IMAGES", help="image folder")
    p.add_argument("--strict", action="store_true", help="fail at the first bad sample")


def _synth(args):
    from kdet.data.synthetic import make_shapes_dataset
    from kdet.errors import KdetError
    size = args.image_size
    if len(size) not in (1, 2):
        raise KdetError(f"--image-size takes S or H W, got {size}")
    d = make_shapes_dataset(args.out, num_images=args.num_images,
                            image_size=size[0] if len(size) == 1 else tuple(size),
                            seed=args.seed, val_fraction=args.val_fraction,
                            max_objects=args.max_objects)
    print(f"wrote {d.num_train + d.num_val} images to {d.image_dir}")
    print(f"  train: {d.train_ann} ({d.num_train} images)")
    print(f"  val:   {d.val_ann} ({d.num_val} images)")
    print(f"  {d.num_objects} objects ({d.num_crowd} crowd), {d.num_empty} images without "
          "objects, classes: circle square triangle")
    print(f"use: kdet.data.coco_dataset({d.train_ann!r}, {d.image_dir!r})")
    return 0


def _info(args):
    import numpy as np

    from kdet.data.coco import read_coco
    records, info = read_coco(args.ann_file, args.image_dir, strict=args.strict)
    labels = np.concatenate([r.labels[~r.iscrowd] for r in records]) if records else []
    counts = np.bincount(np.asarray(labels, np.int64), minlength=info.num_classes)
    print(f"{len(records)} usable images, {int(counts.sum())} objects, "
          f"{sum(int(r.iscrowd.sum()) for r in records)} crowd regions, "
          f"{sum(r.num_non_crowd == 0 for r in records)} images without objects")
    for label, (cid, name) in enumerate(zip(info.category_ids, info.class_names)):
        print(f"  label {label:3d}  category_id {cid:4d}  {name}: {int(counts[label])}")
    return 0


def run(args):
    return _synth(args) if args.data_command == "synth" else _info(args)
