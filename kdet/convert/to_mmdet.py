"""pycls RegNet state dicts <-> MMDetection's ResNet-style keys (both directions).

``pycls_to_mmdet`` does what MMDetection's tools/model_converters/regnet2mmdet.py does
(``stem.conv`` -> ``conv1``, ``s1.b1.f.a`` -> ``layer1.0.conv1``, ``s1.b1.proj`` ->
``layer1.0.downsample.0``, ``head.fc`` -> ``fc``) and also maps RegNetY's SE
(``f.se.f_ex.0|2`` -> ``se.fc1|fc2``, kdet's names: MMDetection's RegNet has no SE).
``mmdet_to_pycls`` is its inverse. Both return ``(new_state_dict, [keys not converted])``;
values are passed through unchanged (PyTorch layout).
"""
import collections

from kdet.convert import keymaps


def pycls_to_mmdet(state_dict):
    """{pycls key: array} -> ({MMDetection backbone key: array}, [unconverted pycls keys])."""
    out, left = collections.OrderedDict(), []
    for key, value in state_dict.items():
        canon = keymaps.pycls_key(key)
        new = keymaps.to_mmdet_key(canon) if canon else None
        if new is None:
            left.append(key)
        else:
            out[new] = value
    return out, left


def mmdet_to_pycls(state_dict):
    """{MMDetection key (bare or ``backbone.``): array} -> ({pycls key: array}, [unconverted]).

    A detector checkpoint's non-backbone keys (``neck.*`` ...) are reported as unconverted.
    """
    bare = not any(k.startswith("backbone.") for k in state_dict)
    out, left = collections.OrderedDict(), []
    for key, value in state_dict.items():
        canon = keymaps.mmdet_key(key, bare)
        new = keymaps.to_pycls_key(canon) if canon and canon.startswith(("backbone.", "head.fc.")) else None
        if new is None:
            left.append(key)
        else:
            out[new] = value
    return out, left
