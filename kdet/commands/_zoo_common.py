"""Shared by `kdet train | test | export`: data folders, config resolution, weights, norm.

Data folder layouts (DIR), tried in order:

* kdet's synthetic layout (``kdet data synth``, :func:`kdet.data.shapes_paths`):
  ``DIR/images/`` + ``DIR/annotations/instances_{train,val}.json``;
* COCO 2017: ``DIR/{train,val}2017/`` + ``DIR/annotations/instances_{train,val}2017.json``.
"""
import json
import os

from kdet.errors import KdetError

CONFIG_JSON = "config.json"


def add_config_arguments(parser):
    parser.add_argument("config", metavar="CONFIG",
                        help="zoo config name (see `kdet zoo list`) or a config .py file")
    parser.add_argument("--img-scale", type=int, nargs=2, metavar=("LONG", "SHORT"),
                        help="override the config's (long, short) resize edges, e.g. 320 256 "
                             "(also disables multi-scale training)")
    parser.add_argument("--num-classes", type=int,
                        help="classes of the model (default: from the data's categories, "
                             "the training run's config.json, or 80)")


def data_paths(data_dir):
    """{"image_dir", "train_ann", "val_ann", "train_images", "val_images"} of DIR."""
    from kdet.data import shapes_paths
    if not data_dir or not os.path.isdir(data_dir):
        raise KdetError(f"--data {data_dir!r} is not a folder")
    p = shapes_paths(data_dir)
    if os.path.exists(p["train_ann"]) or os.path.exists(p["val_ann"]):
        return dict(train_ann=p["train_ann"], val_ann=p["val_ann"],
                    train_images=p["image_dir"], val_images=p["image_dir"])
    ann = os.path.join(data_dir, "annotations")
    coco = dict(train_ann=os.path.join(ann, "instances_train2017.json"),
                val_ann=os.path.join(ann, "instances_val2017.json"),
                train_images=os.path.join(data_dir, "train2017"),
                val_images=os.path.join(data_dir, "val2017"))
    if os.path.exists(coco["train_ann"]) or os.path.exists(coco["val_ann"]):
        return coco
    raise KdetError(f"{data_dir} holds neither annotations/instances_{{train,val}}.json (kdet data "
                    "synth layout) nor annotations/instances_{train,val}2017.json (COCO)")


def need(path, what):
    if not os.path.exists(path):
        raise KdetError(f"{what} {path} not found")
    return path


def num_categories(ann_file):
    with open(ann_file) as f:
        try:
            cats = json.load(f).get("categories", [])
        except json.JSONDecodeError as e:
            raise KdetError(f"{ann_file} is not valid json: {e}") from None
    if not cats:
        raise KdetError(f"{ann_file} has no categories")
    return len(cats)


def run_config_of(weights):
    """The config.json of the training run that wrote ``weights`` (its folder or one above)."""
    if not weights:
        return None
    d = os.path.dirname(os.path.abspath(weights))
    for folder in (d, os.path.dirname(d)):
        path = os.path.join(folder, CONFIG_JSON)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None


def build_model(args, num_classes=None, weights=None):
    """(model, recipe, zoo config) for CONFIG with the CLI overrides; loads ``weights``."""
    import kdet.zoo
    cfg = kdet.zoo.get_config(args.config)
    run_cfg = run_config_of(weights) or {}
    overrides = {}
    scale = getattr(args, "img_scale", None) or run_cfg.get("img_scale_override")
    if scale:
        overrides["img_scale"] = tuple(scale)
    n = args.num_classes or num_classes or run_cfg.get("num_classes") or 80
    model, recipe = cfg.build(num_classes=n, **overrides)
    if weights:
        load_weights(model, weights)
    return model, recipe, cfg


def load_weights(model, path):
    """Keras ``.weights.h5`` (kdet train's checkpoints) or an MMDetection ``.pth``."""
    need(path, "weights file")
    if path.endswith(".weights.h5"):
        try:
            model.load_weights(path)
        except ValueError as e:
            raise KdetError(f"{path} does not fit this model ({str(e).splitlines()[0]}); check "
                            "CONFIG and --num-classes") from None
    elif path.endswith((".pth", ".pt")):
        from kdet.convert import load_weights as load_converted, read_torch_checkpoint
        sd = read_torch_checkpoint(path)
        load_converted(model, sd.get("state_dict", sd) if isinstance(sd, dict) else sd, "mmdet")
    else:
        raise KdetError(f"weights must be a Keras .weights.h5 or an mmdet .pth, got {path}")


def renormalize(dataset, preprocessing):
    """The pipeline normalises per 'pytorch' (RGB mean/std); map to the model's own norm
    (e.g. the RegNet configs' pycls BGR mean/std) exactly: x' = (x*std + mean -> order) ..."""
    import tensorflow as tf

    from kdet.data.transforms import NORMALIZATION
    src = NORMALIZATION["pytorch"]
    mean, std = list(preprocessing["mean"]), list(preprocessing["std"])
    if mean == list(src["mean"]) and std == list(src["std"]) and preprocessing["to_rgb"]:
        return dataset
    s_mean, s_std = tf.constant(src["mean"]), tf.constant(src["std"])
    d_mean, d_std = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
    to_rgb = bool(preprocessing["to_rgb"])

    def fn(images, gt):
        valid = tf.reduce_any(tf.not_equal(images, 0.0), axis=-1, keepdims=True)
        pixels = images * s_std + s_mean                 # RGB 0..255
        if not to_rgb:
            pixels = pixels[..., ::-1]
        out = (pixels - d_mean) / d_std
        return tf.where(valid, out, 0.0), gt             # padding stays 0 (mmdet pads with 0)
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def static_pad_size(ann_file, recipe, training):
    """(H, W): the padded size of the largest image of ``ann_file`` at the recipe's largest
    scale, so every batch has one static shape (needed to train under tf.function / XLA)
    without squeezing any image (mmdet pads per batch instead)."""
    from kdet.data.transforms import rescale_size
    with open(ann_file) as f:
        images = json.load(f).get("images", [])
    scales = [tuple(recipe.img_scale)]
    if training and recipe.train_scales:
        scales = [tuple(s) for s in recipe.train_scales]
        if recipe.multiscale_mode == "range":   # range: long/short edges up to their maxima
            scales = [(max(s[0] for s in scales), max(s[1] for s in scales))]
    d = int(recipe.size_divisor)
    h_max = w_max = d
    for img in images:
        for scale in scales:
            h, w, _ = rescale_size(int(img["height"]), int(img["width"]), scale)
            h_max, w_max = max(h_max, -(-h // d) * d), max(w_max, -(-w // d) * d)
    return h_max, w_max


def dataset(paths, split, recipe, model, batch_size, training, seed=None, **kwargs):
    import kdet.data
    ann, images = paths[f"{split}_ann"], paths[f"{split}_images"]
    need(ann, f"{split} annotations")
    kwargs.setdefault("pad_to", static_pad_size(ann, recipe, training))
    ds = kdet.data.coco_dataset(ann, images, training=training, batch_size=batch_size,
                                style="pytorch", seed=seed, **recipe.dataset_kwargs(training),
                                **kwargs)
    return renormalize(ds, model.preprocessing), ann
