"""Parity with PyTorch: a real torch.save checkpoint -> read_torch_checkpoint -> load_weights
-> kdet outputs equal torch's (eval mode) to <= 1e-4 on the logits and every stage output.

The torch models are written in tests/convert/torch_reference.py from pycls / torchvision
designs, with seeded weights and non-trivial BatchNorm statistics. Run with ``-s`` to see
the measured max abs differences (also recorded in docs/convert.md).
"""
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch CPU is the test-only parity reference; install torch==2.13.0 "
    "(`pip install -e .[test]`) to run the parity tests")

from kdet.backbones import REGNET_ARCHS, regnet_stages  # noqa: E402
from kdet.convert import load_weights, read_torch_checkpoint  # noqa: E402
from kdet.models import ImageClassifier  # noqa: E402
from tests.convert import torch_reference as ref  # noqa: E402

pytestmark = pytest.mark.torch
TOL = 1e-4
NUM_CLASSES = 10
# (H, W) of the random inputs: the standard size and an odd one (ceil-mode strides).
SIZES = [(224, 224), (97, 131)]


def _save(model, path, wrap):
    torch.save({wrap: model.state_dict()} if wrap else model.state_dict(), path)
    return read_torch_checkpoint(path)


def _classifier(arch, **backbone_kwargs):
    """An ImageClassifier whose backbone returns all four stages (the head uses the last)."""
    return ImageClassifier(arch, num_classes=NUM_CLASSES,
                           backbone_kwargs={"out_indices": (0, 1, 2, 3), **backbone_kwargs})


def _trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _check(name, torch_model, classifier, state, source):
    result = load_weights(classifier, state, source, verbose=False)
    assert result.ok and len(result.loaded) == len(classifier.weights)
    backbone = classifier.backbone
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            logits, feats = torch_model(x)
        x_k = x.permute(0, 2, 3, 1).numpy()
        got_logits = np.asarray(classifier(x_k))
        got_feats = [np.asarray(f) for f in backbone(x_k)]
        diffs = [float(np.abs(got_logits - logits.numpy()).max())]
        assert len(got_feats) == len(feats)
        for gf, tf in zip(got_feats, feats):
            t = tf.permute(0, 2, 3, 1).numpy()
            assert gf.shape == t.shape
            diffs.append(float(np.abs(gf - t).max()))
        scale = float(np.abs(logits.numpy()).max())
        print(f"\nparity {name} {h}x{w}: max|logit| {scale:.3g}; max abs diff logits "
              f"{diffs[0]:.2e}, stages " + ", ".join(f"{d:.2e}" for d in diffs[1:]))
        assert scale > 1e-2, "degenerate reference outputs"
        assert max(diffs) <= TOL, (name, h, w, diffs)
        worst = max(worst, max(diffs))
    return worst


@pytest.mark.parametrize("arch", ["regnetx_400mf", "regnety_400mf"])
def test_pycls_regnet_parity(tmp_path, arch):
    model = ref.randomise(ref.PyclsRegNet(REGNET_ARCHS[arch], NUM_CLASSES), seed=0)
    state = _save(model, tmp_path / f"{arch}.pyth", wrap="model_state")  # as pycls saves
    _check(f"pycls {arch}", model, _classifier(arch), state, "pycls")


def test_torchvision_resnet50_parity(tmp_path):
    model = ref.randomise(ref.TvResNet50(NUM_CLASSES), seed=2)
    state = _save(model, tmp_path / "resnet50.pth", wrap=None)
    _check("torchvision resnet50", model, _classifier("resnet50"), state, "torchvision")


def test_torchvision_regnetx_400mf_variant(tmp_path):
    """torchvision's regnet_x_400mf is wider than pycls' (stage 4: 400 vs 384 channels)."""
    arch = REGNET_ARCHS["regnetx_400mf"]
    model = ref.TvRegNet(arch, num_classes=1000)
    # torchvision's docs: regnet_x_400mf has 5,495,976 parameters (pycls' has 5,157,512)
    assert sum(p.numel() for p in model.parameters()) == 5_495_976
    model = ref.randomise(ref.TvRegNet(arch, NUM_CLASSES), seed=3)
    state = _save(model, tmp_path / "regnet_x_400mf.pth", wrap=None)
    classifier = _classifier("regnetx_400mf", rounding="torchvision")
    _check("torchvision regnetx_400mf", model, classifier, state, "torchvision")
    full = ImageClassifier("regnetx_400mf", backbone_kwargs={"rounding": "torchvision"})
    assert _trainable_params(full) == 5_495_976


@pytest.mark.slow
def test_torchvision_regnety_800mf_variant_with_se(tmp_path):
    """A torchvision RegNetY (SE keys f.se.fc1/fc2) whose widths differ from pycls'."""
    arch = REGNET_ARCHS["regnety_800mf"]
    model = ref.randomise(ref.TvRegNet(arch, NUM_CLASSES), seed=4)
    state = _save(model, tmp_path / "regnet_y_800mf.pth", wrap=None)
    _check("torchvision regnety_800mf", model, _classifier("regnety_800mf", rounding="torchvision"),
           state, "torchvision")
    # torchvision's docs: regnet_y_800mf has 6,432,512 parameters
    full = ImageClassifier("regnety_800mf", backbone_kwargs={"rounding": "torchvision"})
    assert _trainable_params(full) == 6_432_512


@pytest.mark.parametrize("arch", list(REGNET_ARCHS))
def test_rounding_variants_match_references(arch):
    """kdet's two roundings equal pycls' float64 and torchvision's torch-float32 generators."""
    a = REGNET_ARCHS[arch]
    for rounding, fn in (("pycls", ref.pycls_stages), ("torchvision", ref.torchvision_stages)):
        ws, ds, gs = fn(**a)
        got = regnet_stages(arch, rounding=rounding)
        assert (got["widths"], got["depths"], got["group_widths"]) == (ws, ds, gs), rounding


# torchvision's published parameter counts (torchvision/models/regnet.py, Weights meta
# "num_params") for the RegNets it ships that kdet also has (it has no 4/6.4/12 GF models).
TORCHVISION_NUM_PARAMS = {
    "regnetx_400mf": 5_495_976, "regnetx_800mf": 7_259_656, "regnetx_1.6gf": 9_190_136,
    "regnetx_3.2gf": 15_296_552, "regnetx_8.0gf": 39_572_648,
    "regnety_400mf": 4_344_144, "regnety_800mf": 6_432_512, "regnety_1.6gf": 11_202_430,
    "regnety_3.2gf": 19_436_338, "regnety_8.0gf": 39_381_472,
}


@pytest.mark.parametrize("arch", list(TORCHVISION_NUM_PARAMS))
def test_torchvision_reference_matches_published_param_counts(arch):
    """The torch re-implementation of torchvision's width rule (which kdet's "torchvision"
    rounding equals, see above) reproduces torchvision's published parameter counts."""
    model = ref.TvRegNet(REGNET_ARCHS[arch], num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_NUM_PARAMS[arch]
