"""`kdet zoo list` prints the model zoo (name, params, GFLOPs, seed AP, builds here);
`kdet zoo build NAME` builds one config and prints its summary.

Params / GFLOPs / "builds" come from kdet/zoo/zoo_table.json, written by
benchmarks/zoo_table.py (the table says when it was measured); `--measure` measures the
listed rows now instead (slow: it builds every model)."""

TABLE = "zoo_table.json"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="print the zoo table", description=__doc__.splitlines()[0])
    p.add_argument("--method", help="only this method folder (regnet, paa, mask_rcnn, ...)")
    p.add_argument("--measure", action="store_true",
                   help="build each listed model now and measure params (and GFLOPs with "
                        "--flops) instead of reading the recorded table")
    p.add_argument("--flops", action="store_true", help="with --measure: also count GFLOPs")
    p.add_argument("--json", action="store_true", help="print json instead of a table")
    p = sub.add_parser("build", help="build one config and print a summary")
    p.add_argument("name", metavar="NAME", help="config name or file")
    p.add_argument("--num-classes", type=int, help="default 80 (COCO)")
    p.add_argument("--img-scale", type=int, nargs=2, metavar=("LONG", "SHORT"))


def _recorded():
    import json
    import os

    import kdet.zoo
    path = os.path.join(os.path.dirname(kdet.zoo.__file__), TABLE)
    if not os.path.exists(path):
        return {"rows": {}}
    with open(path) as f:
        return json.load(f)


def _measure(cfg, flops):
    from kdet.utils import count_flops
    if cfg.not_implemented:
        return {"builds": False, "error": cfg.not_implemented}
    try:
        model, _ = cfg.build(num_classes=80)
    except Exception as e:  # report, do not stop the table
        return {"builds": False, "error": f"{type(e).__name__}: {e}"}
    row = {"builds": True, "params": int(model.count_params()), "measured": "now"}
    if flops:
        row["gflops"] = round(count_flops(model, (800, 1344, 3)) / 1e9, 1)
    return row


def _fmt(v, spec):
    width = int(spec.split(".")[0])
    return "-".rjust(width) if v is None else format(v, spec)


def _list(args):
    import json

    import kdet.zoo
    from kdet.errors import KdetError
    names = kdet.zoo.list_configs(args.method)
    if not names:
        raise KdetError(f"no configs for method {args.method!r}")
    table = _recorded()
    rows = []
    for name in names:
        cfg = kdet.zoo.get_config(name)
        rec = _measure(cfg, args.flops) if args.measure else table["rows"].get(name, {})
        rows.append(dict(name=name, model=cfg.model, method=cfg.method,
                         params_m=rec.get("params") and rec["params"] / 1e6,
                         gflops=rec.get("gflops"), box_ap=cfg.seed.box_ap,
                         mask_ap=cfg.seed.mask_ap, mem_gb=cfg.seed.mem_gb, fps=cfg.seed.fps,
                         builds=rec.get("builds"), error=rec.get("error"),
                         measured=rec.get("measured")))
    if args.json:
        print(json.dumps(dict(rows=rows, machine=table.get("machine"),
                              input_hw=table.get("input_hw")), indent=1))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'config':<{w}}  {'params(M)':>9}  {'GFLOPs':>6}  {'box AP':>6}  {'mask AP':>7}  "
          f"builds here")
    for r in rows:
        builds = {True: "yes", False: "no", None: "not measured"}[r["builds"]]
        if r["builds"] is False and r["error"]:
            builds += f" ({r['error'][:60]})"
        print(f"{r['name']:<{w}}  {_fmt(r['params_m'], '9.1f')}  {_fmt(r['gflops'], '6.1f')}  "
              f"{_fmt(r['box_ap'], '6.1f')}  {_fmt(r['mask_ap'], '7.1f')}  {builds}")
    print()
    print("box/mask AP: COCO val2017 as reported by MMDetection in the seeds (not measured here).")
    if args.measure:
        print("params/GFLOPs: measured now (num_classes=80; GFLOPs at 800x1344 with --flops).")
    else:
        when = sorted({r["measured"] for r in rows if r["measured"]})
        print(f"params/GFLOPs/builds: recorded by benchmarks/zoo_table.py "
              f"({when[0] + ' .. ' + when[-1] if when else 'never run'}; "
              f"{table.get('machine', '?')}; num_classes=80, GFLOPs = multiply-adds of one "
              f"forward at {table.get('input_hw', [800, 1344])} counted over Keras layers). "
              "'-' = not measured; `kdet zoo list --measure` measures now.")
    return 0


def _build(args):
    import kdet.zoo
    cfg = kdet.zoo.get_config(args.name)
    overrides = {"img_scale": tuple(args.img_scale)} if args.img_scale else {}
    model, recipe = cfg.build(num_classes=args.num_classes, **overrides)
    bb = model.backbone
    print(f"{cfg.name}: kdet.models.{cfg.model} ({model.num_classes} classes)")
    print(f"  source:    {cfg.source}")
    print(f"  params:    {model.count_params():,}")
    print(f"  backbone:  {cfg.backbone} {cfg.backbone_kwargs} -> channels "
          f"{list(bb.out_channels)}")
    print(f"  input:     {model.preprocessing}")
    print(f"  recipe:    schedule {recipe.schedule} ({recipe.max_epochs} epochs), lr "
          f"{recipe.base_lr} for batch {recipe.batch_size}, momentum {recipe.momentum}, "
          f"weight decay {recipe.weight_decay}, grad clip {recipe.grad_clip}, train scales "
          f"{recipe.train_scales or [recipe.img_scale]} ({recipe.multiscale_mode or 'single'}), "
          f"masks {recipe.with_masks}")
    seed = cfg.seed
    print(f"  seed:      box AP {seed.box_ap}" + (f", mask AP {seed.mask_ap}" if seed.mask_ap
                                                  else "") + f" ({seed.table})")
    return 0


def run(args):
    return _list(args) if args.zoo_command == "list" else _build(args)
