"""Params/FLOPs of every RegNetX classifier against MMClassification's table (seed 002)."""
import re

import pytest

from kdet.models import ImageClassifier
from kdet.utils import count_flops, count_params
from tests.conftest import SEEDS

# Seed 002_317280002db7029a.txt (MMClassification RegNet README), ImageNet-1k, 224x224:
# (Params(M), Flops(G)) exactly as printed.
MMCLS_TABLE = {
    "regnetx_400mf": ("5.16", "0.41"), "regnetx_800mf": ("7.26", "0.81"),
    "regnetx_1.6gf": ("9.19", "1.63"), "regnetx_3.2gf": ("15.3", "3.21"),
    "regnetx_4.0gf": ("22.12", "4.0"), "regnetx_6.4gf": ("26.21", "6.51"),
    "regnetx_8.0gf": ("39.57", "8.03"), "regnetx_12gf": ("46.11", "12.15"),
}


def _printed(value, printed):
    """Round ``value`` to the digits the table printed (e.g. "15.3" -> 1 decimal)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value:.{decimals}f}"


def test_table_matches_seed_file():
    """The numbers above are the seed's (guards against a typo in this test)."""
    seed = SEEDS / "002_317280002db7029a.txt"
    if not seed.exists():
        pytest.skip(f"seed file not present at {seed} (shared/ is beside the repo in CI)")
    rows = re.findall(r"\|\s*RegNetX-(\w+\.?\w*)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", seed.read_text())
    parsed = {f"regnetx_{name.lower()}": (p, f) for name, p, f in rows}
    assert parsed == MMCLS_TABLE


@pytest.mark.parametrize("arch", list(MMCLS_TABLE))
def test_regnetx_params_and_flops_match_mmcls(arch):
    model = ImageClassifier(arch, num_classes=1000)
    params = count_params(model) / 1e6
    flops = count_flops(model, (224, 224, 3)) / 1e9
    want_p, want_f = MMCLS_TABLE[arch]
    print(f"\n{arch:15s} params {params:8.4f}M (table {want_p:>5s})  "
          f"FLOPs {flops:8.4f}G (table {want_f:>5s})")
    assert _printed(params, want_p) == want_p
    assert _printed(flops, want_f) == want_f


def test_flops_rules_on_a_tiny_model():
    """Conv (with/without bias), BN (affine), ReLU, pooling and the head rule, by hand."""
    import keras
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(x)   # 8*8*27*4
    y = keras.layers.BatchNormalization(name="bn")(y)                              # 2*256
    y = keras.layers.ReLU(name="r")(y)                                             # 256
    y = keras.layers.Conv2D(2, 1, use_bias=True, name="c2")(y)                     # 64*4*2 + 64*2
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)                         # 128
    y = keras.layers.Dense(5, name="head.fc")(y)                                   # 2*5 (head)
    m = keras.Model(x, y)
    body = 8 * 8 * 27 * 4 + 2 * 256 + 256 + (64 * 4 * 2 + 64 * 2) + 128
    assert count_flops(m, (8, 8, 3)) == body
    assert count_flops(m, (8, 8, 3), include_head=True) == body + 10


def test_transposed_conv_counted_per_input_position():
    """mmcv's deconv hook: in_h*in_w*kh*kw*in*out, plus out_h*out_w*out for the bias (the
    Mask R-CNN mask head's 2x2 stride-2 upsample)."""
    import keras
    x = keras.Input((7, 5, 3))
    y = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up")(x)
    m = keras.Model(x, y)
    assert count_flops(m, (7, 5, 3)) == 7 * 5 * 2 * 2 * 3 * 4 + 14 * 10 * 4


def test_count_flops_rejects_bad_shape():
    from kdet.errors import KdetError
    model = ImageClassifier("regnetx_400mf", num_classes=10)
    with pytest.raises(KdetError, match="input_shape"):
        count_flops(model, (224, 224))
