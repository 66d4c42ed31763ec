"""Load a PyTorch state dict (numpy arrays) into a kdet model: rename, transpose, check.

The model says which PyTorch-style key each of its variables has: a bare backbone through
``Backbone.torch_state_map()`` (keys taken under ``backbone.``), any other model through its
own ``torch_state_map()`` (``ImageClassifier``: ``backbone.*`` + ``head.fc.*``; detectors:
``backbone.*``, ``neck.*``, ``rpn_head.*``, ``roi_head.*`` / ``bbox_head.*``). Source keys are
renamed to those keys by ``keymaps``, then values are laid out for Keras: conv weight
[out, in/groups, kh, kw] -> kernel [kh, kw, in/groups, out]; linear weight [out, in] -> kernel
[in, out]; 1-D tensors as is. A map value may instead carry its own layout (an object with
``variable``, ``torch_shape``, ``to_keras``, ``from_keras``: ``kdet.layers.torch_layout.TorchParam``,
e.g. the R-CNN box head's first FC, whose input axis is (C, H, W) in PyTorch and (H, W, C) in
kdet, or a transposed conv).
"""
import dataclasses
import re

import numpy as np

from kdet.convert import keymaps
from kdet.errors import CheckpointError, KdetError


@dataclasses.dataclass
class LoadResult:
    """What ``load_weights`` did. Every source key is in exactly one of loaded (as
    ``(source key, model key)``), skipped, unexpected or mismatched."""

    source: str
    model_name: str = "model"
    loaded: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)      # model keys with no value
    unexpected: list = dataclasses.field(default_factory=list)   # source keys not convertible
    mismatched: list = dataclasses.field(default_factory=list)   # (src, dst, src shape, want)
    skipped: list = dataclasses.field(default_factory=list)      # (src key, reason)
    hint: str = ""

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self):
        s = (f"{len(self.loaded)} matched, {len(self.missing)} missing, "
             f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched, "
             f"{len(self.skipped)} skipped")
        return s

    def report(self):
        """Multi-line readable report listing every key that was not converted."""
        lines = [f"{self.source} checkpoint -> {self.model_name}: {self.summary()}"]
        for src, dst, got, want in self.mismatched:
            lines.append(f"  shape mismatch: {src} {tuple(got)} -> {dst} expects {tuple(want)}")
        lines += [f"  missing in checkpoint: {k}" for k in self.missing]
        lines += [f"  unexpected in checkpoint: {k}" for k in self.unexpected]
        lines += [f"  skipped: {k} ({why})" for k, why in self.skipped]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    __str__ = report


def target_map(model):
    """{PyTorch-style key: keras.Variable} for a kdet model (see the module docstring)."""
    from kdet.backbones.base import Backbone
    if isinstance(model, Backbone):
        return {f"backbone.{k}": v for k, v in model.torch_state_map().items()}
    if hasattr(model, "torch_state_map"):
        return dict(model.torch_state_map())
    raise KdetError(f"{type(model).__name__} has no torch_state_map(); cannot load PyTorch "
                    "weights into it")


def _resolve(target):
    """A torch_state_map value -> (variable, PyTorch shape, torch -> Keras, Keras -> torch)."""
    if hasattr(target, "to_keras"):  # TorchParam: its own layout
        return target.variable, tuple(target.torch_shape), target.to_keras, target.from_keras
    want = _torch_shape(target.shape)
    return target, want, (lambda v: to_keras_layout(v, len(want))), from_keras_layout


def export_state_dict(model):
    """{PyTorch key: np.ndarray in PyTorch layout} of a kdet model (the inverse of
    ``load_weights``: these arrays load back exactly)."""
    out = {}
    for key, target in target_map(model).items():
        var, want, _, from_keras = _resolve(target)
        value = np.asarray(from_keras(np.asarray(var.numpy())))
        if value.shape != want:
            raise KdetError(f"{key}: layout gives {value.shape}, expected {want}")
        out[key] = value
    return out


def _torch_shape(var_shape):
    """The PyTorch shape that lays out onto a Keras variable of ``var_shape``."""
    s = tuple(int(d) for d in var_shape)
    if len(s) == 4:
        return (s[3], s[2], s[0], s[1])
    if len(s) == 2:
        return (s[1], s[0])
    return s


def to_keras_layout(value, ndim):
    """PyTorch tensor -> Keras layout for a variable of rank ``ndim``."""
    if ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if ndim == 2:
        return np.transpose(value, (1, 0))
    return value


def from_keras_layout(value):
    """Keras variable value -> PyTorch layout (inverse of ``to_keras_layout``)."""
    value = np.asarray(value)
    if value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if value.ndim == 2:
        return np.transpose(value, (1, 0))
    return value


_CLASS_LAYERS = re.compile(r"\.(fc_cls|fc_reg|conv_logits|retina_cls|atss_cls|rpn_cls|conv_cls)"
                           r"\.(weight|bias)$")


def _hint(model, source, result):
    if result.mismatched and all(_CLASS_LAYERS.search(m[0]) for m in result.mismatched):
        return ("only the class-dependent layers differ: the checkpoint was trained for another "
                "number of classes (or anchors); build the model with the checkpoint's "
                "num_classes, or load with strict=False to keep the rest")
    return _rounding_hint(model, source, result)


def _rounding_hint(model, source, result):
    if source != "torchvision" or not result.mismatched:
        return ""
    net = getattr(model, "backbone", model)
    cfg = getattr(net, "_kdet_config", {})
    if "rounding" in cfg and cfg["rounding"] != "torchvision":
        return ("torchvision rounds some RegNet widths differently from pycls; build the model "
                "with rounding='torchvision' (CLI: --rounding torchvision)")
    return ""


def match_state_dict(model, state_dict, source):
    """Plan a load without touching the model -> (LoadResult, [(variable, keras value)])."""
    keymaps.check_source(source)
    targets = target_map(model)
    prefixes = {k.split(".", 1)[0] for k in targets}
    renamed, unmapped, ignored = keymaps.canonical_keys(state_dict, source)
    result = LoadResult(source=source, model_name=getattr(model, "name", "model"))
    result.skipped += [(k, "no Keras variable (BatchNorm counter)") for k in ignored]
    result.unexpected += unmapped
    assignments, used = [], set()
    for new, src in renamed.items():
        target = targets.get(new)
        if target is None:
            if new.split(".", 1)[0] not in prefixes:
                result.skipped.append((src, f"{new.split('.', 1)[0]}.* is not part of this model"))
            else:
                result.unexpected.append(src)
            continue
        value = np.asarray(state_dict[src])
        var, want, to_keras, _ = _resolve(target)
        if value.shape != want:
            result.mismatched.append((src, new, value.shape, want))
            used.add(new)
            continue
        if value.dtype.kind not in "fiub":
            result.mismatched.append((src, new, value.shape, want))
            continue
        assignments.append((var, np.asarray(to_keras(value)).astype(var.dtype)))
        result.loaded.append((src, new))
        used.add(new)
    result.missing = [k for k in targets if k not in used]
    result.hint = _hint(model, source, result)
    return result, assignments


def load_weights(model, state_dict, source, strict=True, verbose=True):
    """Load a PyTorch state dict (``{name: np.ndarray}``, e.g. from ``read_torch_checkpoint``)
    into ``model`` (a kdet backbone, ``ImageClassifier``, or any model with
    ``torch_state_map()``).

    source: "pycls" | "mmcls" | "mmdet" | "torchvision" (naming of the checkpoint's keys).
    strict: raise ``CheckpointError`` (and load nothing) unless every model variable gets a
        value and every checkpoint key is used or deliberately skipped (BatchNorm counters;
        keys outside the model, e.g. a classifier head or a detector's neck for a bare
        backbone). With strict=False the matching keys are loaded and the rest reported.
    verbose: print the report (every key not converted is listed).
    Returns a ``LoadResult``.
    """
    if not isinstance(state_dict, dict):
        raise KdetError(f"state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    result, assignments = match_state_dict(model, state_dict, source)
    if verbose:
        print(result.report())
    if strict and not result.ok:
        example = ""
        if result.mismatched:
            src, _, got, want = result.mismatched[0]
            example = f" (e.g. {src}: checkpoint {tuple(got)} vs model {tuple(want)})"
        elif result.missing:
            example = f" (e.g. missing {result.missing[0]})"
        elif result.unexpected:
            example = f" (e.g. unexpected {result.unexpected[0]})"
        hint = f"; {result.hint}" if result.hint else ""
        err = CheckpointError(
            f"{source} checkpoint does not match model {model.name!r}: {result.summary()}"
            f"{example}; nothing was loaded (is it another architecture?){hint}")
        err.result = result
        raise err
    for var, value in assignments:
        var.assign(value)
    return result
