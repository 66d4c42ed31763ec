"""`kdet train CONFIG --data DIR`: train a zoo config with its MMDetection recipe.

The work directory (default ``work_dirs/<config>``, as mmdet's tools/train.py) holds
``config.json`` (the resolved config, recipe and command line), ``tensorboard/``,
``metrics.csv``, ``checkpoints/epoch_NNN.weights.h5`` (+ ``best`` by val_bbox_mAP and
``latest``), ``results/`` (COCO results json per evaluation) and ``backup/`` while a run is
unfinished (``--resume`` continues it exactly, see kdet.training.BackupAndRestore).
"""
import os

from kdet.commands._zoo_common import add_config_arguments


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="COCO-format folder (`kdet data synth` layout or COCO 2017)")
    parser.add_argument("--work-dir", metavar="DIR", help="default: work_dirs/<config name>")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --work-dir")
    parser.add_argument("--epochs", type=int,
                        help="train this many epochs (default: the schedule's); milestones "
                             "past it are dropped")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="images per step (default 2, mmdet's per-GPU batch); the lr "
                             "scales linearly from the config's lr for 16")
    parser.add_argument("--lr", type=float, help="base lr for --batch-size (overrides scaling)")
    parser.add_argument("--warmup-iters", type=int, help="linear warmup steps (default 500)")
    parser.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data")
    parser.add_argument("--eval-interval", type=int, default=1,
                        help="COCO evaluation every N epochs (0: never)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling / augmentation seed")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras fit verbosity (1: progress bar)")


def _schedule(recipe, epochs):
    from kdet.training.schedules import _parse
    max_epochs, steps = _parse(recipe.schedule)
    if epochs is None:
        return recipe.schedule, max_epochs
    return {"max_epochs": int(epochs), "step": [s for s in steps if s < epochs]}, int(epochs)


def run(args):
    import json

    from kdet.commands import _zoo_common as common
    from kdet.errors import KdetError

    for flag in ("epochs", "batch_size", "steps_per_epoch", "warmup_iters"):
        value = getattr(args, flag)
        if value is not None and value < 1 and not (flag == "warmup_iters" and value == 0):
            raise KdetError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.eval_interval < 0:
        raise KdetError(f"--eval-interval must be >= 0, got {args.eval_interval}")
    paths = common.data_paths(args.data)
    common.need(paths["train_ann"], "training annotations")
    import kdet.zoo
    cfg = kdet.zoo.get_config(args.config)
    work_dir = args.work_dir or os.path.join("work_dirs", cfg.name)
    backup = os.path.join(work_dir, "backup")
    if os.path.isdir(backup) and os.listdir(backup) and not args.resume:
        raise KdetError(f"{work_dir} holds an unfinished run; pass --resume to continue it or "
                        "choose another --work-dir")
    if args.resume and not (os.path.isdir(backup) and os.listdir(backup)):
        print(f"kdet train: nothing to resume in {work_dir}; starting a new run")
    os.makedirs(work_dir, exist_ok=True)

    num_classes = args.num_classes or common.num_categories(paths["train_ann"])
    model, recipe, cfg = common.build_model(args, num_classes=num_classes)
    if args.warmup_iters is not None:
        recipe = recipe.replace(warmup_iters=args.warmup_iters)
    schedule, epochs = _schedule(recipe, args.epochs)
    train_ds, _ = common.dataset(paths, "train", recipe, model, args.batch_size, training=True,
                                 seed=args.seed)
    steps = args.steps_per_epoch
    if steps is None:
        steps = int(train_ds.cardinality().numpy())
        if steps == 0:
            raise KdetError("the training set gives no full batch; lower --batch-size")
        if steps < 0:     # unknown length: count one pass (the schedule needs steps/epoch)
            steps = sum(1 for _ in train_ds)
    train_ds = train_ds.repeat() if args.steps_per_epoch else train_ds
    lr = args.lr if args.lr is not None else recipe.lr(args.batch_size)
    optimizer = recipe.replace(base_lr=lr, batch_size=args.batch_size).optimizer(
        steps, schedule=schedule)
    model.compile(optimizer=optimizer)

    eval_cb = None
    if args.eval_interval and os.path.exists(paths["val_ann"]):
        from kdet.evaluation import COCOEvalCallback
        val_ds, val_ann = common.dataset(paths, "val", recipe, model, args.batch_size,
                                         training=False)
        eval_cb = COCOEvalCallback(
            val_ds, val_ann, interval=args.eval_interval,
            iou_types=("bbox", "segm") if recipe.with_masks else ("bbox",),
            outfile_prefix=os.path.join(work_dir, "results", "epoch_{epoch}"),
            verbose=args.verbose)
    from kdet.training import fit_callbacks
    callbacks = fit_callbacks(work_dir, eval_callback=eval_cb,
                              monitor="val_bbox_mAP" if eval_cb else None)
    resolved = dict(config=cfg.name, source=cfg.source, model=cfg.model,
                    model_arguments=cfg.model_arguments(num_classes, recipe),
                    num_classes=num_classes, recipe=recipe.to_dict(),
                    img_scale_override=list(args.img_scale) if args.img_scale else None,
                    train=dict(epochs=epochs, schedule=schedule, steps_per_epoch=steps,
                               batch_size=args.batch_size, lr=lr, seed=args.seed,
                               data=paths, eval_interval=args.eval_interval),
                    seed_result=cfg.to_dict()["seed"])
    with open(os.path.join(work_dir, common.CONFIG_JSON), "w") as f:
        json.dump(resolved, f, indent=1, default=str)
    print(f"kdet train: {cfg.name} ({model.count_params():,} params, {num_classes} classes), "
          f"{epochs} epochs x {steps} steps, batch {args.batch_size}, lr {lr:g}; "
          f"work dir {work_dir}")
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks,
                        verbose=args.verbose)
    latest = os.path.join(work_dir, "checkpoints", "latest.weights.h5")
    model.save_weights(latest, overwrite=True)
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    with open(os.path.join(work_dir, "final_metrics.json"), "w") as f:
        json.dump(final, f, indent=1)
    shown = {k: round(v, 4) for k, v in final.items()
             if k in ("loss", "val_bbox_mAP", "val_bbox_mAP_50", "val_segm_mAP")}
    print(f"kdet train: done; {shown}; weights {latest}")
    return 0
