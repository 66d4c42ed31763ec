"""C++ (and CUDA) TensorFlow kernels: RoIAlign, DeformConv2d (v1) and ModulatedDeformConv2d (v2).

Every ``*.cc`` here is compiled on first use against the installed TensorFlow into one cached
library (``build.py``); ``*.cu.cc`` join it when TensorFlow has CUDA and nvcc is present. The
pure-TF twins in `kdet.ops` are the fallback and the XLA path; `kdet.ops._dispatch` chooses.

    lib = kdet.custom_ops.load_library()   # tf.load_op_library module, or None (+ one warning)
    kdet.custom_ops.info()                 # what is built/loaded and why
    kdet.custom_ops.build.build(force=True)  # (re)build ahead of time (`kdet ops build`)
"""
from kdet.custom_ops import build  # noqa: F401  (the module: build.build(force=...) builds)
from kdet.custom_ops.build import BuildError, info, load_library

__all__ = ["BuildError", "build", "info", "load_library"]
