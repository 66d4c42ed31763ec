"""The synthetic-dataset Mask R-CNN recipe used by ``kdet demo``, the learning tests and
``examples/train_synthetic_mask_rcnn.py``.

It trains :class:`kdet.models.MaskRCNN` with a RegNetX-400MF backbone from random weights
(nothing can be downloaded here) on ``kdet.data.make_shapes_dataset`` and evaluates COCO bbox
and segm AP on its held-out split. Deviations from the COCO recipe
(``mask_rcnn_regnetx-400MF_fpn_mstrain-poly_3x_coco``), each needed to learn from scratch on
a 2-core CPU in minutes, are the keyword defaults of :func:`synthetic_model` and
:func:`train` and are listed in docs/two_stage.md:

* backbone from random init, all stages trainable, BatchNorm in training mode (the COCO
  recipe freezes the stem + stage 1 and BN statistics of an ImageNet-pretrained model);
* narrower heads: FPN / RPN / mask convs 64 channels (COCO 256), box FCs 256 (1024);
* fewer RoIs for small images: train proposals nms_pre 1000 / 300 kept (2000 / 1000),
  R-CNN sampler 64 RoIs per image (512), so at most 16 positives reach the mask head, test
  proposals 500 / 300 (1000 / 1000);
* 256x256 images (1333x800), 3 classes, batch 8; AdamW lr 2e-3 with 100 warmup steps and a
  x0.1 step at 80% of 48 epochs of 36 steps, 1728 steps in all (SGD 0.02, 1x/3x schedule,
  batch 16);
* 2000 generated images (1600 train, 400 held out), so the 1728 steps see each training
  image about 9 times: with 400 images (36 passes) the detector over-fits and bbox mAP
  stalls at 0.46.

Measured on the 2-core machine (docs/two_stage.md): ~0.54 s per step of 8 images, 48
epochs in 15.5-16.5 minutes: held-out bbox mAP 0.54-0.59, segm mAP 0.62-0.66 (two runs).
"""
import os
import time

from kdet.errors import KdetError

SYNTH_IMAGE_SIZE = 256


def synthetic_model(num_classes=3, backbone="regnetx_400mf", channels=64, fc_channels=256,
                    rcnn_samples=64, train_proposals=300, test_proposals=300):
    """The small-image Mask R-CNN of the recipe (see the module docstring)."""
    from kdet.models import MaskRCNN
    return MaskRCNN(
        backbone, num_classes=num_classes,
        backbone_kwargs=dict(frozen_stages=-1, norm_eval=False),
        neck=dict(out_channels=channels), rpn_head=dict(feat_channels=channels),
        roi_head=dict(fc_out_channels=fc_channels, mask_conv_channels=channels),
        train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=train_proposals),
                       rcnn=dict(sampler=dict(num=rcnn_samples))),
        test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=test_proposals)),
        preprocessing=_preprocessing())


def _preprocessing():
    from kdet.models.base import default_preprocessing
    return default_preprocessing("pytorch", img_scale=(SYNTH_IMAGE_SIZE, SYNTH_IMAGE_SIZE))


def datasets(data_dir, batch_size=4, image_size=SYNTH_IMAGE_SIZE, seed=0, max_instances=16):
    """(train_ds, val_ds, paths) over a shapes dataset in ``data_dir``."""
    from kdet.data import coco_dataset, shapes_paths
    paths = shapes_paths(data_dir)
    common = dict(img_scale=(image_size, image_size), pad_to=(image_size, image_size),
                  max_instances=max_instances, with_masks=True)
    train_ds = coco_dataset(paths["train_ann"], paths["image_dir"], training=True,
                            batch_size=batch_size, seed=seed, **common)
    val_ds = coco_dataset(paths["val_ann"], paths["image_dir"], training=False,
                          batch_size=batch_size, **common)
    return train_ds, val_ds, paths


STEPS_PER_EPOCH = 36


def train(data_dir, epochs=48, num_images=2000, batch_size=8, learning_rate=2e-3, seed=0,
          steps_per_epoch=STEPS_PER_EPOCH, eval_interval=None, model=None, verbose=1, callbacks=(),
          jit_compile=False, make_data=True):
    """Generates the dataset (when missing or of another size), trains, evaluates.

    Args:
        data_dir: folder of the shapes dataset (written when ``make_data`` and it is absent or
            holds another number of images than ``num_images``).
        epochs: Keras epochs of ``steps_per_epoch`` steps (48 x 36 = 1728 steps).
        num_images: images generated (80% train, 20% held-out val).
        batch_size: images per step.
        learning_rate: AdamW peak rate (warmup 100 steps, x0.1 at 80% of training).
        steps_per_epoch: steps per (Keras) epoch, 36 (None: one pass over the train split).
        eval_interval: run COCO evaluation every this many epochs (None: only at the end).
        model: a model to train (default :func:`synthetic_model`).
    Returns:
        dict(model, history (Keras History.history), metrics (final COCO metrics:
        bbox_mAP, segm_mAP, ...), train_seconds, steps).
    """
    import keras

    from kdet.data import make_shapes_dataset, shapes_paths
    from kdet.evaluation import COCOEvalCallback
    from kdet.training import StepWarmupSchedule

    paths = shapes_paths(data_dir)
    have = _num_images(paths) if os.path.exists(paths["train_ann"]) else None
    if have != num_images:
        if not make_data:
            if have is None:
                raise KdetError(f"no shapes dataset in {data_dir}")
        else:
            if have is not None and verbose:
                # e.g. a demo folder from an older recipe (400 images): the files replaced are
                # the recipe's own generated images and annotations.
                print(f"{data_dir} holds {have} images, the recipe uses {num_images}: "
                      f"regenerating", flush=True)
            make_shapes_dataset(data_dir, num_images=num_images, image_size=SYNTH_IMAGE_SIZE,
                                seed=seed)
    keras.utils.set_random_seed(seed)
    train_ds, val_ds, paths = datasets(data_dir, batch_size=batch_size, seed=seed)
    if steps_per_epoch is None:
        steps_per_epoch = _num_train_images(paths["train_ann"]) // batch_size
        if steps_per_epoch <= 0:
            raise KdetError("the training split has fewer images than one batch")
    model = model or synthetic_model()
    total = epochs * steps_per_epoch
    # Linear warmup from 1% over (at most) 100 steps, x0.1 from step int(0.8 * total): the
    # mmcv-style schedule counted in steps (steps_per_epoch=1) rather than epochs.
    schedule = StepWarmupSchedule(learning_rate, steps_per_epoch=1, milestones=(int(0.8 * total),),
                                  warmup_iters=max(1, min(100, total // 5)), warmup_ratio=0.01)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4,
                                                   global_clipnorm=10.0),
                  jit_compile=jit_compile)
    # NaN placeholders on epochs without evaluation only when a user callback (CSVLogger) may
    # need fixed columns; otherwise they would fill the progress line with 24 "nan"s.
    evaluator = COCOEvalCallback(val_ds, paths["val_ann"], interval=eval_interval or epochs,
                                 iou_types=("bbox", "segm"), verbose=verbose,
                                 fill_skipped=bool(callbacks))
    t0 = time.time()
    history = model.fit(train_ds.repeat(), epochs=epochs, steps_per_epoch=steps_per_epoch,
                        callbacks=[evaluator, *callbacks], verbose=verbose)
    seconds = time.time() - t0
    metrics = dict(evaluator.last_metrics)
    return dict(model=model, history=history.history, metrics=metrics, train_seconds=seconds,
                steps=total, val_dataset=val_ds, paths=paths)


def draw_predictions(model, val_dataset, path, num_images=8, score_thr=0.5):
    """PNG grid of the model's detections (boxes + masks) on the first validation images."""
    from kdet.data.synthetic import CATEGORIES
    from kdet.utils.visualize import denormalize, draw_detections, save_grid
    names = [c["name"] for c in CATEGORIES]
    tiles = []
    for images, _ in val_dataset:
        out = model.predict_on_batch(images)
        for i in range(images.shape[0]):
            if len(tiles) == num_images:
                break
            tiles.append(draw_detections(
                denormalize(images[i].numpy(), model.preprocessing), out["boxes"][i],
                out["labels"][i], out["scores"][i], out.get("masks")[i] if "masks" in out
                else None, class_names=names, score_thr=score_thr))
        if len(tiles) == num_images:
            break
    return save_grid(tiles, path)


def _num_images(paths):
    """Images listed in a shapes dataset's train + val annotation files."""
    import json
    total = 0
    for key in ("train_ann", "val_ann"):
        with open(paths[key]) as f:
            total += len(json.load(f)["images"])
    return total


def _num_train_images(ann_file):
    """Images with at least one non-crowd object (the ones training keeps)."""
    import json
    with open(ann_file) as f:
        data = json.load(f)
    return len({a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0)})
