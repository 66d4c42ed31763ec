"""Checkpoint key names of pycls / MMClassification / MMDetection / torchvision -> kdet's.

kdet's canonical names are MMClassification's (what ``ImageClassifier.torch_state_map()``
returns): ``backbone.<MMDetection ResNet-style key>`` and ``head.fc.{weight,bias}``, e.g.
``backbone.layer2.0.downsample.0.weight``. RegNetY's squeeze-excitation, which MMDetection's
RegNet lacks, is ``backbone.layer{i}.{j}.se.fc1|fc2`` (kdet's own names).

Sources (key names checked against the reference code):

* pycls (pycls/models/anynet.py, regnet.py): ``stem.conv|bn``, ``s{i}.b{j}`` (j from 1),
  ``proj``/``bn`` (shortcut), ``f.a|a_bn|b|b_bn|c|c_bn``, ``f.se.f_ex.0|2``, ``head.fc``.
  The mapping is MMDetection's tools/model_converters/regnet2mmdet.py, plus SE.
* mmcls: already canonical (``backbone.*``, ``head.fc.*``).
* mmdet: a bare backbone state dict (what regnet2mmdet.py writes, with its ``fc.*``) or a
  detector checkpoint (``backbone.*``, ``neck.*``, ``rpn_head.*`` ... kept as they are).
* torchvision (torchvision/models/regnet.py, resnet.py): RegNet ``stem.0|1``,
  ``trunk_output.block{i}.block{i}-{j}`` (j from 0) with ``proj.0|1``, ``f.a.0|1``,
  ``f.b.0|1``, ``f.se.fc1|fc2``, ``f.c.0|1``; ResNet keys are MMDetection's; head ``fc``.
"""
import re

from kdet.errors import KdetError

SOURCES = ("pycls", "mmcls", "mmdet", "torchvision")

# Keys PyTorch keeps that have no Keras variable.
IGNORED_SUFFIXES = ("num_batches_tracked",)

_PYCLS_BLOCK = {"proj": "downsample.0", "bn": "downsample.1", "f.a": "conv1", "f.a_bn": "bn1",
                "f.b": "conv2", "f.b_bn": "bn2", "f.c": "conv3", "f.c_bn": "bn3",
                "f.se.f_ex.0": "se.fc1", "f.se.f_ex.2": "se.fc2"}
_TV_BLOCK = {"proj.0": "downsample.0", "proj.1": "downsample.1", "f.a.0": "conv1",
             "f.a.1": "bn1", "f.b.0": "conv2", "f.b.1": "bn2", "f.c.0": "conv3", "f.c.1": "bn3",
             "f.se.fc1": "se.fc1", "f.se.fc2": "se.fc2"}
_MMDET_BLOCK_PARTS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample.0",
                      "downsample.1", "se.fc1", "se.fc2")

_PYCLS_RE = re.compile(r"^s(\d+)\.b(\d+)\.(.+)\.([a-z_]+)$")
_TV_RE = re.compile(r"^trunk_output\.block(\d+)\.block(\d+)-(\d+)\.(.+)\.([a-z_]+)$")
_MMDET_RE = re.compile(r"^layer(\d+)\.(\d+)\.(.+)\.([a-z_]+)$")
_PARAM_RE = re.compile(r"^(.+)\.([a-z_]+)$")


def check_source(source):
    if source not in SOURCES:
        raise KdetError(f"unknown checkpoint source {source!r}; valid sources: {', '.join(SOURCES)}")
    return source


def pycls_key(key):
    """pycls key -> canonical key, or None when the key is not a pycls RegNet/ResNet key."""
    m = _PARAM_RE.match(key)
    if m and m.group(1) in ("stem.conv", "stem.bn"):
        return f"backbone.{'conv1' if m.group(1) == 'stem.conv' else 'bn1'}.{m.group(2)}"
    if m and m.group(1) == "head.fc":
        return key
    m = _PYCLS_RE.match(key)
    if m and m.group(3) in _PYCLS_BLOCK and int(m.group(2)) >= 1:
        i, j, part, param = m.groups()
        return f"backbone.layer{int(i)}.{int(j) - 1}.{_PYCLS_BLOCK[part]}.{param}"
    return None


def torchvision_key(key):
    """torchvision RegNet/ResNet key -> canonical key, or None."""
    m = _PARAM_RE.match(key)
    if m and m.group(1) in ("stem.0", "stem.1"):
        return f"backbone.{'conv1' if m.group(1) == 'stem.0' else 'bn1'}.{m.group(2)}"
    if m and m.group(1) == "fc":
        return f"head.{key}"
    m = _TV_RE.match(key)
    if m and m.group(1) == m.group(2) and m.group(4) in _TV_BLOCK:
        i, _, j, part, param = m.groups()
        return f"backbone.layer{int(i)}.{int(j)}.{_TV_BLOCK[part]}.{param}"
    return _mmdet_backbone_key(key)


def _mmdet_backbone_key(key):
    """Bare MMDetection ResNet-style backbone key (also torchvision's ResNet) -> canonical."""
    m = _PARAM_RE.match(key)
    if m and m.group(1) in ("conv1", "bn1"):
        return f"backbone.{key}"
    m = _MMDET_RE.match(key)
    if m and (m.group(3) in _MMDET_BLOCK_PARTS or m.group(3).startswith("conv2.")):
        return f"backbone.{key}"  # conv2.conv_offset.*: a DCN block's offset conv
    return None


def mmdet_key(key, bare):
    """MMDetection key -> canonical. ``bare``: the state dict has no ``backbone.`` prefix."""
    if not bare:
        return key
    if _PARAM_RE.match(key) and key.startswith("fc."):
        return f"head.{key}"  # regnet2mmdet.py keeps pycls' classifier as fc.*
    return _mmdet_backbone_key(key)


def mmcls_key(key):
    return key if key.startswith(("backbone.", "head.")) else None


def canonical_keys(state_dict, source):
    """Source checkpoint keys -> ``({canonical: source key}, [unmapped source keys],
    [ignored source keys])``. Raises CheckpointError when two keys map to one name."""
    from kdet.errors import CheckpointError
    check_source(source)
    bare = not any(k.startswith("backbone.") for k in state_dict)
    out, unmapped, ignored = {}, [], []
    for key in state_dict:
        if key.rsplit(".", 1)[-1] in IGNORED_SUFFIXES:
            ignored.append(key)
            continue
        if source == "pycls":
            new = pycls_key(key)
        elif source == "torchvision":
            new = torchvision_key(key)
        elif source == "mmdet":
            new = mmdet_key(key, bare)
        else:
            new = mmcls_key(key)
        if new is None:
            unmapped.append(key)
        elif new in out:
            raise CheckpointError(f"checkpoint keys {out[new]!r} and {key!r} both map to {new!r}")
        else:
            out[new] = key
    return out, unmapped, ignored


# ---- canonical -> source names (for writing pycls / MMDetection checkpoints) -------------

_PYCLS_BLOCK_INV = {v: k for k, v in _PYCLS_BLOCK.items()}


def to_pycls_key(key):
    """Canonical (or bare MMDetection) key -> pycls key, or None."""
    key = key[len("backbone."):] if key.startswith("backbone.") else key
    m = _PARAM_RE.match(key)
    if m and m.group(1) in ("conv1", "bn1"):
        return f"stem.{'conv' if m.group(1) == 'conv1' else 'bn'}.{m.group(2)}"
    if m and m.group(1) in ("fc", "head.fc"):
        return f"head.fc.{m.group(2)}"
    m = _MMDET_RE.match(key)
    if m and m.group(3) in _PYCLS_BLOCK_INV:
        i, j, part, param = m.groups()
        return f"s{int(i)}.b{int(j) + 1}.{_PYCLS_BLOCK_INV[part]}.{param}"
    return None


def to_mmdet_key(key):
    """Canonical key -> bare MMDetection backbone key (classifier head -> ``fc``)."""
    if key.startswith("backbone."):
        return key[len("backbone."):]
    if key.startswith("head.fc."):
        return key[len("head."):]
    return None
