"""`kdet convert`: PyTorch checkpoint -> Keras weights file, or pycls <-> MMDetection keys.

    kdet convert regnetx_400mf.pyth rx400.weights.h5 --source pycls --arch regnetx_400mf
    kdet convert rx400.pyth rx400_mmdet.pth --to-mmdet        # like regnet2mmdet.py
    kdet convert rx400_mmdet.pth rx400_pycls.pth --from-mmdet
"""
import os

from kdet.errors import KdetError

SOURCES = ("pycls", "mmcls", "mmdet", "torchvision")


def add_arguments(parser):
    parser.add_argument("src", help="PyTorch checkpoint (.pth / .pyth, zip or legacy format)")
    parser.add_argument("dst", help="output: a Keras weights file ending in .weights.h5, or a "
                        ".pth checkpoint with --to-mmdet / --from-mmdet")
    parser.add_argument("--source", choices=SOURCES,
                        help="naming of the checkpoint's keys (required unless --to/--from-mmdet)")
    parser.add_argument("--arch", help="kdet backbone name, e.g. regnetx_400mf, regnety_1.6gf, "
                        "resnet50")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier classes (default: from the checkpoint's head, else 1000)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="build and save the bare backbone (the classifier head is skipped)")
    parser.add_argument("--rounding", choices=("pycls", "torchvision"), default=None,
                        help="RegNet width rounding (default: torchvision for --source "
                        "torchvision, else pycls)")
    parser.add_argument("--non-strict", action="store_true",
                        help="load the keys that match and report the rest instead of failing")
    parser.add_argument("--skip-unknown-objects", action="store_true",
                        help="read the tensors of a checkpoint that also pickles objects of "
                        "non-allowlisted classes (e.g. a training run's message_hub), replacing "
                        "those objects by inert placeholders; their code is never run")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--to-mmdet", action="store_true",
                      help="rename pycls keys to MMDetection's (regnet2mmdet.py); writes a .pth "
                      "readable by torch.load(weights_only=True), no torch needed")
    mode.add_argument("--from-mmdet", action="store_true",
                      help="rename MMDetection RegNet keys back to pycls'")


def _rename(args):
    from kdet.convert import (load_torch_file, mmdet_to_pycls, pycls_to_mmdet,
                              write_torch_checkpoint)
    from kdet.convert.torch_reader import extract_state_dict
    raw = load_torch_file(args.src, skip_unknown_objects=args.skip_unknown_objects)
    state = extract_state_dict(raw, args.src)
    if args.to_mmdet:
        new, left = pycls_to_mmdet(state)
        out = {"state_dict": new}  # as regnet2mmdet.py saves it
    else:
        new, left = mmdet_to_pycls(state)
        out = {"model_state": new}  # as pycls saves it
    if not new:
        raise KdetError(f"no key of {args.src} could be converted; is it a "
                        f"{'pycls' if args.to_mmdet else 'MMDetection RegNet'} checkpoint?")
    for key in left:
        print(f"not converted: {key}")
    write_torch_checkpoint(args.dst, out)
    print(f"wrote {len(new)} tensors to {args.dst} ({len(left)} keys not converted)")
    return 0


def _resolve_arch(name):
    """'RegNetX-400MF' / 'resnet50' -> (kdet backbone name, is_regnet), or KdetError."""
    from kdet.backbones.registry import backbone_names
    from kdet.backbones.regnet_arch import ARCH_SETTINGS, canonical_name
    key = name.strip().lower().replace("-", "_")
    if key in backbone_names():
        return key, key in ARCH_SETTINGS
    try:
        return canonical_name(key), True
    except KdetError:
        raise KdetError(f"unknown arch {name!r}; valid names: "
                        f"{', '.join(backbone_names())}") from None


def _build(args, arch, is_regnet, state):
    if args.rounding and not is_regnet:
        raise KdetError(f"--rounding applies to RegNets only, not {args.arch!r}")
    rounding = args.rounding or ("torchvision" if args.source == "torchvision" else "pycls")
    kwargs = {"rounding": rounding} if is_regnet else {}
    if args.backbone_only:
        from kdet.backbones import build_backbone
        return build_backbone(arch, **kwargs)
    from kdet.models import ImageClassifier
    num_classes = args.num_classes or _head_classes(state) or 1000
    return ImageClassifier(arch, num_classes=num_classes, backbone_kwargs=kwargs)


def _head_classes(state):
    for key in ("head.fc.weight", "fc.weight"):
        if key in state and getattr(state[key], "ndim", 0) == 2:
            return int(state[key].shape[0])
    return None


def run(args):
    if not os.path.isfile(args.src):
        raise KdetError(f"checkpoint {args.src!r} does not exist")
    if args.to_mmdet or args.from_mmdet:
        if args.source or args.arch:
            raise KdetError("--to-mmdet/--from-mmdet only rename keys; drop --source/--arch")
        return _rename(args)
    if not args.source or not args.arch:
        raise KdetError("--source and --arch are required (or use --to-mmdet / --from-mmdet)")
    if not args.dst.endswith(".weights.h5"):
        raise KdetError(f"output {args.dst!r} must end in .weights.h5 (a Keras weights file)")
    if args.backbone_only and args.num_classes is not None:
        raise KdetError("--num-classes makes no sense with --backbone-only")
    arch, is_regnet = _resolve_arch(args.arch)
    from kdet.convert import load_weights, read_torch_checkpoint
    state = read_torch_checkpoint(args.src, skip_unknown_objects=args.skip_unknown_objects)
    model = _build(args, arch, is_regnet, state)
    result = load_weights(model, state, args.source, strict=not args.non_strict)
    model.save_weights(args.dst)
    print(f"wrote {args.dst} ({model.name}, {model.count_params():,} parameters; "
          f"{len(result.loaded)} tensors converted)")
    return 0
