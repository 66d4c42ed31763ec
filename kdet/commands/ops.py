"""`kdet ops`: build the custom C++/CUDA ops ahead of time, or show what is active and why.

    kdet ops build            # compile (or reuse) the op library for the installed TensorFlow
    kdet ops build --force    # recompile everything
    kdet ops build --check-cuda   # also compile the CUDA sources with nvcc (compile only)
    kdet ops info [--json]    # compilers, cache path, loaded or not, which implementation runs
"""
import json


def add_arguments(parser):
    sub = parser.add_subparsers(dest="ops_command", metavar="{build,info}")
    sub.required = True
    b = sub.add_parser("build", help="compile the op library into the cache (reused if present)")
    b.add_argument("--force", action="store_true", help="recompile even if cached")
    b.add_argument("--quiet", action="store_true", help="do not print compiler commands")
    b.add_argument("--check-cuda", action="store_true",
                   help="also compile every CUDA source with nvcc and the .cc files with "
                   "GOOGLE_CUDA=1 (compile only; works without a GPU)")
    i = sub.add_parser("info", help="show which implementation is active and why")
    i.add_argument("--json", action="store_true", help="print a JSON object")


def _build(args):
    from kdet.custom_ops import build
    path = build.build(force=args.force, verbose=not args.quiet)
    import tensorflow as tf
    lib = tf.load_op_library(str(path))
    names = sorted(n for n in dir(lib) if n.startswith("kdet_") and not n.endswith("_fallback"))
    print(f"built {path}")
    print(f"ops: {', '.join(names)}")
    if args.check_cuda:
        objects = build.compile_cuda_check(verbose=not args.quiet)
        print(f"CUDA compile check passed ({len(objects)} objects, compile only, GPU execution "
              "not verified)")
    return 0


def _info(args):
    from kdet.custom_ops import build
    from kdet.ops import _dispatch
    build.load_library()  # builds if needed; a failure warns once and is reported below
    info = build.info()
    info["implementation_setting"] = _dispatch.get_implementation()
    info["roi_align"] = _dispatch.explain("kdet_roi_align")
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    rows = [("TensorFlow", info["tensorflow"]),
            ("C++ compiler", f"{info['cxx']} ({info['cxx_version']})" if info["cxx"] else "none"),
            ("CUDA kernels", f"{'yes' if info['cuda'] else 'no'}: {info['cuda_reason']}"),
            ("sources", ", ".join(info["sources"])),
            ("cache", info["cache_dir"]),
            ("library", f"{info['library']} ({'built' if info['built'] else 'not built'})"),
            ("loaded", f"{'yes' if info['loaded'] else 'no'}: {info['reason']}"),
            ("setting", info["implementation_setting"]),
            ("roi_align runs", info["roi_align"])]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def run(args):
    return _build(args) if args.ops_command == "build" else _info(args)
