"""kdet: the MMDetection model zoo as Keras 3 layers and models on TensorFlow.

Subpackages are imported lazily (``kdet.models``, ``kdet.backbones`` ...), so
``import kdet`` is cheap and the CLI starts fast.
"""
import importlib

from kdet import _env  # noqa: F401  (sets KERAS_BACKEND, checks the TensorFlow install)
from kdet.errors import KdetError

__version__ = "0.1.0"

_SUBPACKAGES = (
    "custom_ops", "ops", "layers", "backbones", "necks", "core", "losses", "heads",
    "models", "data", "evaluation", "training", "export", "convert", "zoo", "utils",
)


def __getattr__(name):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"kdet.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'kdet' has no attribute {name!r}")


__all__ = ["KdetError", "__version__", *_SUBPACKAGES]
