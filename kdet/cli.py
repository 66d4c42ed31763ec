"""The `kdet` command: `kdet train | test | export | convert | zoo | ops | data | demo`.

Each subcommand lives in `kdet/commands/<name>.py` and exposes `add_arguments(parser)`
and `run(args) -> int`; this module only dispatches, importing a subcommand's module
(and so TensorFlow) only when that subcommand runs.
"""
import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help). Add a subcommand by adding a line here and a module.
COMMANDS = {
    "demo": ("kdet.commands.demo", "run the README demo"),
    "convert": ("kdet.commands.convert", "convert a PyTorch checkpoint into a Keras weights file"),
    "zoo": ("kdet.commands.zoo", "list or build model-zoo configs"),
    "ops": ("kdet.commands.ops", "build the custom C++ ops or show which implementation is active"),
    "data": ("kdet.commands.data", "dataset tools (synthetic COCO-format dataset)"),
    "train": ("kdet.commands.train", "train a model-zoo config on a COCO-format dataset"),
    "test": ("kdet.commands.test", "evaluate trained weights with COCO metrics"),
    "export": ("kdet.commands.export", "export a SavedModel for TF Serving"),
}


def _available():
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def build_parser():
    parser = argparse.ArgumentParser(prog="kdet", description=__doc__.splitlines()[0])
    from kdet import __version__
    parser.add_argument("--version", action="version", version=f"kdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=mod)
        importlib.import_module(mod).add_arguments(p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from kdet.errors import KdetError
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KdetError as e:
        print(f"kdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
