"""`kdet convert`: Keras weights files, --to-mmdet / --from-mmdet, errors as one line."""
import subprocess
import sys

import numpy as np
import pytest

from kdet.cli import main
from kdet.convert import keymaps, load_torch_file, read_torch_checkpoint, write_torch_checkpoint
from kdet.convert.loader import from_keras_layout


@pytest.fixture(scope="module")
def pycls_ckpt(tmp_path_factory):
    """A pycls-style checkpoint ({"model_state": ...}, 7 classes) and the model it came from."""
    from kdet.models import ImageClassifier
    model = ImageClassifier("regnetx_400mf", num_classes=7)
    state = {keymaps.to_pycls_key(k): from_keras_layout(v.numpy())
             for k, v in model.torch_state_map().items()}
    path = tmp_path_factory.mktemp("ckpt") / "regnetx_400mf.pyth"
    write_torch_checkpoint(path, {"model_state": state, "epoch": 100, "cfg": "MODEL: ..."})
    return path, model


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--source", "--arch", "--num-classes", "--backbone-only", "--rounding",
                "--to-mmdet", "--from-mmdet", "--skip-unknown-objects",
                "pycls,mmcls,mmdet,torchvision"):
        assert opt in out


def test_convert_to_keras_weights(pycls_ckpt, tmp_path, capsys):
    from kdet.models import ImageClassifier
    src, ref = pycls_ckpt
    dst = tmp_path / "rx400.weights.h5"
    assert main(["convert", str(src), str(dst), "--source", "pycls", "--arch", "RegNetX-400MF"]) == 0
    out = capsys.readouterr().out
    assert "pycls checkpoint -> regnetx_400mf_cls: " in out
    assert "matched, 0 missing, 0 unexpected, 0 shape-mismatched" in out
    assert f"wrote {dst}" in out
    model = ImageClassifier("regnetx_400mf", num_classes=7)  # classes read from the head
    model.load_weights(dst)
    want = ref.torch_state_map()
    for k, v in model.torch_state_map().items():
        np.testing.assert_array_equal(v.numpy(), want[k].numpy(), err_msg=k)
    # backbone only: the head is listed as skipped
    dst2 = tmp_path / "rx400_backbone.weights.h5"
    assert main(["convert", str(src), str(dst2), "--source", "pycls", "--arch", "regnetx_400mf",
                 "--backbone-only"]) == 0
    assert "skipped: head.fc.weight (head.* is not part of this model)" in capsys.readouterr().out
    assert dst2.exists()


def test_errors_are_one_line(pycls_ckpt, tmp_path, capsys):
    src, _ = pycls_ckpt
    dst = str(tmp_path / "x.weights.h5")
    assert main(["convert", str(src), dst, "--source", "pycls", "--arch", "regnetx_5gf"]) == 2
    err = _err_line(capsys)
    assert err.startswith("kdet convert: error: unknown arch 'regnetx_5gf'; valid names: ")
    assert "regnetx_400mf" in err and "resnet50" in err
    assert main(["convert", str(src), dst, "--source", "pycls", "--arch", "regnety_400mf"]) == 2
    assert "does not match model 'regnety_400mf_cls'" in _err_line(capsys)
    assert main(["convert", str(src), str(tmp_path / "x.h5"), "--source", "pycls", "--arch",
                 "regnetx_400mf"]) == 2
    assert "must end in .weights.h5" in _err_line(capsys)
    assert main(["convert", str(src), dst, "--arch", "regnetx_400mf"]) == 2
    assert "--source and --arch are required" in _err_line(capsys)
    assert main(["convert", str(tmp_path / "nope.pth"), dst, "--source", "pycls", "--arch",
                 "regnetx_400mf"]) == 2
    assert "does not exist" in _err_line(capsys)
    assert main(["convert", str(src), dst, "--source", "torchvision", "--arch", "resnet50",
                 "--rounding", "torchvision"]) == 2
    assert "--rounding applies to RegNets only" in _err_line(capsys)


def test_to_mmdet_and_back(pycls_ckpt, tmp_path, capsys):
    src, _ = pycls_ckpt
    mm, back = tmp_path / "mmdet.pth", tmp_path / "pycls.pth"
    assert main(["convert", str(src), str(mm), "--to-mmdet"]) == 0
    assert "not converted:" not in capsys.readouterr().out
    raw = load_torch_file(mm)
    assert list(raw) == ["state_dict"]  # as regnet2mmdet.py writes it
    assert "layer1.0.downsample.0.weight" in raw["state_dict"] and "fc.weight" in raw["state_dict"]
    assert main(["convert", str(mm), str(back), "--from-mmdet"]) == 0
    a, b = read_torch_checkpoint(src), read_torch_checkpoint(back)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert main(["convert", str(src), str(back), "--from-mmdet"]) == 2  # pycls keys are not mmdet
    assert "no key of" in _err_line(capsys)


def test_subprocess_to_mmdet_and_corrupt_input(pycls_ckpt, tmp_path):
    src, _ = pycls_ckpt
    dst = tmp_path / "mm.pth"
    cmd = [sys.executable, "-m", "kdet.cli", "convert"]
    r = subprocess.run(cmd + [str(src), str(dst), "--to-mmdet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"to {dst}" in r.stdout
    bad = tmp_path / "bad.pth"
    bad.write_bytes(src.read_bytes()[:5000])
    r = subprocess.run(cmd + [str(bad), str(dst), "--to-mmdet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("kdet convert: error: ") and "bad.pth" in r.stderr
    torch = pytest.importorskip("torch", reason="torch (test-only) checks the written file")
    sd = torch.load(dst, weights_only=True)["state_dict"]
    np.testing.assert_array_equal(sd["conv1.weight"].numpy(),
                                  read_torch_checkpoint(src)["stem.conv.weight"])
