"""RegNet design-space parameters -> per-stage widths, depths and group widths.

A RegNet is defined by (w0, wa, wm, depth, group_w, bot_mul[, se_ratio]) (Radosavovic et al.
2020, Sec. 3.3). Block j gets the continuous width u_j = w0 + wa * j, quantised to
w0 * wm^round(log(u_j / w0) / log(wm)) and rounded to a multiple of 8; consecutive blocks of
equal width form a stage. Finally the bottleneck width is made divisible by the group width.

Two roundings exist in the wild and they give different networks for some archs:

* ``"pycls"`` (pycls, MMClassification, MMDetection): float64 arithmetic, Python ``round``
  (half to even) when making widths divisible by the group width.
* ``"torchvision"``: float32 arithmetic (torch tensors) and ``_make_divisible`` (round half
  up, never below 90% of the input) for the group adjustment. torchvision's checkpoints need
  this variant; e.g. its regnet_x_400mf has 5,495,976 parameters against pycls' 5,157,512.
"""
import math

import numpy as np

from kdet.errors import KdetError

# pycls model zoo configs (configs/dds_baselines/regnet{x,y}/*.yaml), the same numbers as
# MMDetection's / MMClassification's RegNet.arch_settings.
ARCH_SETTINGS = {
    "regnetx_400mf": dict(w0=24, wa=24.48, wm=2.54, group_w=16, depth=22, bot_mul=1.0),
    "regnetx_800mf": dict(w0=56, wa=35.73, wm=2.28, group_w=16, depth=16, bot_mul=1.0),
    "regnetx_1.6gf": dict(w0=80, wa=34.01, wm=2.25, group_w=24, depth=18, bot_mul=1.0),
    "regnetx_3.2gf": dict(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25, bot_mul=1.0),
    "regnetx_4.0gf": dict(w0=96, wa=38.65, wm=2.43, group_w=40, depth=23, bot_mul=1.0),
    "regnetx_6.4gf": dict(w0=184, wa=60.83, wm=2.07, group_w=56, depth=17, bot_mul=1.0),
    "regnetx_8.0gf": dict(w0=80, wa=49.56, wm=2.88, group_w=120, depth=23, bot_mul=1.0),
    "regnetx_12gf": dict(w0=168, wa=73.36, wm=2.37, group_w=112, depth=19, bot_mul=1.0),
    "regnety_400mf": dict(w0=48, wa=27.89, wm=2.09, group_w=8, depth=16, bot_mul=1.0, se_ratio=0.25),
    "regnety_800mf": dict(w0=56, wa=38.84, wm=2.4, group_w=16, depth=14, bot_mul=1.0, se_ratio=0.25),
    "regnety_1.6gf": dict(w0=48, wa=20.71, wm=2.65, group_w=24, depth=27, bot_mul=1.0, se_ratio=0.25),
    "regnety_3.2gf": dict(w0=80, wa=42.63, wm=2.66, group_w=24, depth=21, bot_mul=1.0, se_ratio=0.25),
    "regnety_4.0gf": dict(w0=96, wa=31.41, wm=2.24, group_w=64, depth=22, bot_mul=1.0, se_ratio=0.25),
    "regnety_6.4gf": dict(w0=112, wa=33.22, wm=2.27, group_w=72, depth=25, bot_mul=1.0, se_ratio=0.25),
    "regnety_8.0gf": dict(w0=192, wa=76.82, wm=2.19, group_w=56, depth=17, bot_mul=1.0, se_ratio=0.25),
    "regnety_12gf": dict(w0=168, wa=73.36, wm=2.37, group_w=112, depth=19, bot_mul=1.0, se_ratio=0.25),
}

# MMDetection config spelling ("regnetx_3.2gf" also appears as "RegNetX-3.2GF", "regnetx-4GF").
_ALIASES = {"regnetx_4gf": "regnetx_4.0gf", "regnetx_8gf": "regnetx_8.0gf",
            "regnety_4gf": "regnety_4.0gf", "regnety_8gf": "regnety_8.0gf"}

_REQUIRED = ("w0", "wa", "wm", "depth", "group_w", "bot_mul")


def arch_names():
    """Sorted list of the RegNet names accepted by ``resolve_arch``."""
    return list(ARCH_SETTINGS)


def canonical_name(name):
    """'RegNetX-3.2GF' / 'regnetx-4GF' / 'regnetx_3.2gf' -> 'regnetx_3.2gf' (or KdetError)."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in ARCH_SETTINGS:
        raise KdetError(f"unknown RegNet arch {name!r}; valid names: {', '.join(ARCH_SETTINGS)}")
    return key


def resolve_arch(arch):
    """A name or an explicit dict (MMDetection style) -> a validated parameter dict."""
    if isinstance(arch, str):
        return dict(ARCH_SETTINGS[canonical_name(arch)])
    if isinstance(arch, dict):
        missing = [k for k in _REQUIRED if k not in arch]
        if missing:
            raise KdetError(f"RegNet arch dict is missing {missing}; it needs {list(_REQUIRED)}"
                            " (and optionally se_ratio)")
        unknown = set(arch) - set(_REQUIRED) - {"se_ratio"}
        if unknown:
            raise KdetError(f"RegNet arch dict has unknown keys {sorted(unknown)}")
        out = dict(arch)
        if not (out["wa"] >= 0 and out["w0"] > 0 and out["wm"] > 1 and out["w0"] % 8 == 0):
            raise KdetError(f"RegNet arch needs wa >= 0, w0 > 0 divisible by 8, wm > 1; got {arch}")
        if int(out["depth"]) < 1 or out["group_w"] < 1 or out["bot_mul"] <= 0:
            raise KdetError(f"RegNet arch needs depth >= 1, group_w >= 1, bot_mul > 0; got {arch}")
        return out
    raise KdetError(f"arch must be a RegNet name or a dict, got {type(arch).__name__}")


def _block_widths(w0, wa, wm, depth, divisor, dtype):
    """Quantised per-block widths (list of ints), computed in ``dtype`` like the reference."""
    f = np.dtype(dtype).type
    cont = np.arange(depth, dtype=dtype) * f(wa) + f(w0)
    # torch divides a float32 tensor by a Python float (math.log) and stays float32.
    ks = np.round(f(np.log(cont / f(w0))) / f(math.log(wm)) if dtype == np.float32
                  else np.log(cont / w0) / np.log(wm))
    widths = f(w0) * np.power(f(wm), ks.astype(dtype))
    widths = np.round(widths / f(divisor)) * f(divisor)
    return widths.astype(np.int64).tolist()


def _make_divisible(v, divisor):
    """torchvision.ops.misc._make_divisible (min_value = divisor)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def generate_stages(arch, rounding="pycls"):
    """Per-stage (widths, depths, group widths) of a RegNet.

    Returns ``dict(widths=[...], depths=[...], group_widths=[...], bot_mul=b, se_ratio=r)``,
    one entry per stage, e.g. regnetx_3.2gf -> widths [96, 192, 432, 1008], depths [2, 6, 15, 2].
    """
    if rounding not in ("pycls", "torchvision"):
        raise KdetError(f"rounding must be 'pycls' or 'torchvision', got {rounding!r}")
    a = resolve_arch(arch)
    dtype = np.float64 if rounding == "pycls" else np.float32
    blocks = _block_widths(a["w0"], a["wa"], a["wm"], int(a["depth"]), 8, dtype)
    widths, depths = [], []
    for w in blocks:  # consecutive equal widths form one stage (widths are non-decreasing)
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(int(w))
            depths.append(1)
    b = float(a["bot_mul"])
    bottleneck = [int(w * b) for w in widths]
    groups = [int(min(a["group_w"], wb)) for wb in bottleneck]
    if rounding == "pycls":
        bottleneck = [max(g, int(round(wb / g) * g)) for wb, g in zip(bottleneck, groups)]
    else:
        bottleneck = [_make_divisible(wb, g) for wb, g in zip(bottleneck, groups)]
    widths = [int(wb / b) for wb in bottleneck]
    return dict(widths=widths, depths=depths, group_widths=groups, bot_mul=b,
                se_ratio=float(a.get("se_ratio", 0.0) or 0.0))
