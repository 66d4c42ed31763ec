"""load_weights: every source into classifiers / bare backbones, strictness, mismatch reports.

State dicts are made from a kdet model itself (exported to PyTorch layout and renamed to
each source's keys), so these tests need no torch; test_parity_torch.py checks numerics
against real torch models.
"""
import numpy as np
import pytest

from kdet.backbones import RegNet
from kdet.convert import keymaps, load_weights
from kdet.convert.loader import from_keras_layout
from kdet.errors import CheckpointError, KdetError
from kdet.models import ImageClassifier


def _export(model, rename=lambda k: k):
    """{source key: torch-layout array} of a kdet classifier, keys renamed by ``rename``."""
    out = {rename(k): from_keras_layout(v.numpy()) for k, v in model.torch_state_map().items()}
    out.update({rename(k.rsplit(".", 1)[0] + ".num_batches_tracked"): np.array(7)
                for k in model.torch_state_map() if k.endswith("running_var")})
    return out


@pytest.fixture(scope="module")
def ref_model():
    return ImageClassifier("regnetx_400mf", num_classes=5)


@pytest.fixture(scope="module")
def target():
    """One model the tests load into (building models is what costs time here)."""
    return ImageClassifier("regnetx_400mf", num_classes=5)


def _shifted(state, delta):
    """Float tensors + delta, so that each load is seen to overwrite the previous one."""
    return {k: v + np.float32(delta) if v.dtype.kind == "f" else v for k, v in state.items()}


def _assert_holds(model, state, rename=lambda k: k, keys=None):
    """Model variables equal ``state`` (torch layout, keys renamed from kdet's)."""
    for k, var in model.torch_state_map().items():
        if keys is None or k in keys:
            np.testing.assert_array_equal(from_keras_layout(var.numpy()), state[rename(k)],
                                          err_msg=k)


@pytest.mark.parametrize("i,source", enumerate(["pycls", "mmcls", "mmdet"]))
def test_roundtrip_each_source_into_classifier(ref_model, target, i, source, capsys):
    rename = {"pycls": keymaps.to_pycls_key, "mmcls": lambda k: k,
              "mmdet": keymaps.to_mmdet_key}[source]
    state = _shifted(_export(ref_model, rename), i + 1)
    result = load_weights(target, state, source)
    assert result.ok and len(result.loaded) == len(target.weights)
    assert {why for _, why in result.skipped} == {"no Keras variable (BatchNorm counter)"}
    _assert_holds(target, state, rename)
    out = capsys.readouterr().out
    assert (f"{source} checkpoint -> regnetx_400mf_cls: {len(target.weights)} matched, "
            "0 missing, 0 unexpected, 0 shape-mismatched") in out
    assert "skipped: " in out and "num_batches_tracked" in out


def test_bare_backbone_skips_head_and_detector_parts(ref_model):
    state = {("backbone." + k if not k.startswith("fc.") else "neck.x.weight"): v
             for k, v in _export(ref_model, keymaps.to_mmdet_key).items()}
    backbone = RegNet("regnetx_400mf", out_indices=(3,))
    result = load_weights(backbone, state, "mmdet", verbose=False)
    assert result.ok and len(result.loaded) == len(backbone.weights)
    assert ("neck.x.weight", "neck.* is not part of this model") in result.skipped
    _assert_holds(backbone, state, lambda k: "backbone." + k)
    # pycls checkpoint with classifier head into a bare backbone: head listed as skipped
    state = _shifted(_export(ref_model, keymaps.to_pycls_key), 1)
    result = load_weights(backbone, state, "pycls", verbose=False)
    assert result.ok and ("head.fc.weight", "head.* is not part of this model") in result.skipped
    _assert_holds(backbone, state, lambda k: keymaps.to_pycls_key("backbone." + k))


def test_other_architecture_is_refused_with_report(target, capsys):
    other = _export(ImageClassifier("regnety_400mf", num_classes=5), keymaps.to_pycls_key)
    before = {k: v.numpy().copy() for k, v in target.torch_state_map().items()}
    with pytest.raises(CheckpointError, match=r"pycls checkpoint does not match model "
                       r"'regnetx_400mf_cls': \d+ matched, \d+ missing, \d+ unexpected, \d+ "
                       r"shape-mismatched.*e\.g\. .*checkpoint \(.*\) vs model \(.*\).*nothing "
                       r"was loaded") as err:
        load_weights(target, other, "pycls")
    res = err.value.result
    assert res.mismatched and res.unexpected and res.missing
    assert any(".f.se.f_ex." in k for k in res.unexpected)  # RegNetY SE has no home here
    for k, v in target.torch_state_map().items():  # strict: nothing was assigned
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    report = capsys.readouterr().out
    assert "shape mismatch: s1.b1.proj.weight" in report
    assert "unexpected in checkpoint: s1.b1.f.se.f_ex.0.weight" in report
    assert "\n" not in str(err.value)  # the error itself is one line (the CLI prints it)
    # a ResNet checkpoint into a RegNet: nothing fits
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(target, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)},
                     "torchvision", verbose=False)


def test_non_strict_loads_what_matches(ref_model, target):
    state = _shifted(_export(ref_model), 10)
    del state["head.fc.bias"]
    state["backbone.layer9.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(CheckpointError, match="1 missing, 1 unexpected"):
        load_weights(target, state, "mmcls", verbose=False)
    result = load_weights(target, state, "mmcls", strict=False, verbose=False)
    assert result.missing == ["head.fc.bias"]
    assert result.unexpected == ["backbone.layer9.0.conv1.weight"]
    _assert_holds(target, state, keys=set(state) - {"head.fc.bias"})
    assert "missing in checkpoint: head.fc.bias" in result.report()


def test_torchvision_rounding_hint(target):
    # torchvision's regnet_x_400mf ends in 400 channels, pycls' in 384
    state = {"fc.weight": np.zeros((5, 400), np.float32), "fc.bias": np.zeros(5, np.float32)}
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(5, 400\) vs model "
                       r"\(5, 384\).*rounding='torchvision'"):
        load_weights(target, state, "torchvision", verbose=False)


def test_bad_arguments(target):
    with pytest.raises(KdetError, match="unknown checkpoint source 'caffe2'"):
        load_weights(target, {}, "caffe2")
    with pytest.raises(KdetError, match="state_dict must be a dict"):
        load_weights(target, [1, 2], "pycls")
    with pytest.raises(KdetError, match="has no torch_state_map"):
        load_weights(object(), {}, "pycls")
