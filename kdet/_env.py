"""Checks, once, that exactly one TensorFlow distribution of the supported line is installed.

`tensorflow-cpu` and `tensorflow` both install the `tensorflow/` package folder; with both
present, whichever was installed last silently wins and the other's files are left mixed in.
"""
import importlib.metadata as md
import os
import warnings

SUPPORTED_TF = ("2.21",)
SUPPORTED_KERAS = ("3.15",)


def _installed(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_environment():
    dists = {d: _installed(d) for d in ("tensorflow", "tensorflow-cpu", "tf-keras", "tensorflow-addons")}
    tf_dists = [d for d in ("tensorflow", "tensorflow-cpu") if dists[d]]
    if not tf_dists:
        raise ImportError(
            "kdet needs TensorFlow 2.21: install `pip install kdet[cpu]` (CPU) or "
            "`pip install kdet[gpu]` (CUDA), see README 'Installing'.")
    if len(tf_dists) > 1:
        warnings.warn(
            "both `tensorflow` and `tensorflow-cpu` are installed in this environment; they share "
            "the tensorflow/ folder and break each other. Uninstall both and install one "
            "(kdet[cpu] or kdet[gpu]).", RuntimeWarning, stacklevel=3)
    version = dists[tf_dists[0]]
    if not any(version.startswith(v + ".") or version == v for v in SUPPORTED_TF):
        warnings.warn(f"kdet is tested with TensorFlow {SUPPORTED_TF}, found {version}",
                      RuntimeWarning, stacklevel=3)
    kv = _installed("keras")
    if kv is None or not kv.startswith("3."):
        raise ImportError(f"kdet needs Keras 3 (3.15 line), found keras=={kv}")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise ImportError("kdet runs on the TensorFlow backend; unset KERAS_BACKEND or set it "
                          "to 'tensorflow'")


os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
check_environment()
