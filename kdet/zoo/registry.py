"""Config name -> ``configs/<method>/<name>.py`` -> :class:`kdet.zoo.recipe.ZooConfig`.

The registry only maps names to files; every number lives in the config file.
"""
import difflib
import functools
import importlib.util
import os
import pathlib

from kdet.errors import KdetError

# configs/ next to the kdet package (a source checkout); KDET_CONFIG_DIR overrides it.
CONFIG_DIR = pathlib.Path(os.environ.get(
    "KDET_CONFIG_DIR", pathlib.Path(__file__).resolve().parents[2] / "configs"))


@functools.lru_cache(maxsize=None)
def _index():
    if not CONFIG_DIR.is_dir():
        raise KdetError(f"config folder {CONFIG_DIR} not found (set KDET_CONFIG_DIR)")
    out = {}
    for path in sorted(CONFIG_DIR.glob("*/*.py")):
        if not path.name.startswith("_"):
            out[path.stem] = path
    return out


def list_configs(method=None):
    """Sorted config names (MMDetection's names), optionally of one method folder."""
    return [name for name, path in _index().items()
            if method is None or path.parent.name == method]


@functools.lru_cache(maxsize=None)
def _load_file(path):
    spec = importlib.util.spec_from_file_location(f"kdet_config_{pathlib.Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except KdetError:
        raise
    except Exception as e:   # a user's config file: report which file and why
        raise KdetError(f"config {path} failed to load: {type(e).__name__}: {e}") from None
    config = getattr(module, "CONFIG", None)
    from kdet.zoo.recipe import ZooConfig
    if not isinstance(config, ZooConfig):
        raise KdetError(f"config {path} defines no CONFIG = ZooConfig(...)")
    return config


def get_config(name):
    """The :class:`ZooConfig` of a zoo name (``mask_rcnn_regnetx-3.2GF_fpn_1x_coco``, with or
    without ``.py``) or of a config file path. Unknown names raise KdetError with close matches."""
    name = os.fspath(name)
    if name.endswith(".py") and os.path.isfile(name):
        return _load_file(str(pathlib.Path(name).resolve()))
    key = os.path.basename(name)[:-3] if name.endswith(".py") else name
    index = _index()
    if key not in index:
        close = difflib.get_close_matches(key, list(index), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            "; `kdet zoo list` shows every name"
        raise KdetError(f"unknown config {name!r}{hint}")
    return _load_file(str(index[key]))


def build(name, num_classes=None, **overrides):
    """``(model, recipe)`` of a zoo config; see :meth:`ZooConfig.build` for ``overrides``."""
    return get_config(name).build(num_classes=num_classes, **overrides)
