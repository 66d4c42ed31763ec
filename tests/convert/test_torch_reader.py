"""read_torch_checkpoint: safety (allowlist), formats (zip, legacy), dtypes, views, nesting."""
import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from kdet.convert import load_torch_file, read_torch_checkpoint, write_torch_checkpoint
from kdet.convert.torch_reader import LEGACY_MAGIC, LEGACY_PROTOCOL
from kdet.errors import CheckpointError

_SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 4}}


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _legacy_bytes(payload):
    """A legacy-format header (magic, protocol, sys info) followed by ``payload``."""
    buf = io.BytesIO()
    for obj in (LEGACY_MAGIC, LEGACY_PROTOCOL, _SYS_INFO):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump(payload, buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    return buf.getvalue()


def _zip_bytes(payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("evil,forbidden", [(_System, f"{os.system.__module__}.system"),
                                            (_Eval, "builtins.eval")])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt, evil, forbidden):
    marker = tmp_path / "marker"
    # hidden inside an otherwise normal-looking nested checkpoint
    payload = {"state_dict": collections.OrderedDict(w=[1.0, 2.0], x=evil(marker))}
    data = _zip_bytes(payload) if fmt == "zip" else _legacy_bytes(payload)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"refused to load '{forbidden}'.*nothing was executed"):
        read_torch_checkpoint(path)
    assert not marker.exists()
    # sanity: plain pickle *would* have run it (so the test can fail)
    if fmt == "legacy":
        f = io.BytesIO(data)
        for _ in range(3):
            pickle.load(f)
        pickle.load(f)
        assert marker.exists()


def test_refuses_arbitrary_class_and_module_import(tmp_path):
    payload = {"state_dict": {"w": collections.Counter(), "cls": zipfile.ZipInfo}}
    path = tmp_path / "cls.pth"
    path.write_bytes(_zip_bytes(payload))
    with pytest.raises(CheckpointError, match="refused to load 'zipfile.ZipInfo'"):
        read_torch_checkpoint(path)


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "good.pth"
    write_torch_checkpoint(good, {"state_dict": {"w": np.arange(1000, dtype=np.float32)}})
    data = good.read_bytes()
    cases = {"truncated.pth": data[: len(data) // 2], "garbage.pth": os.urandom(300),
             "empty.pth": b"", "text.pth": b"hello, I am not a checkpoint\n"}
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(CheckpointError, match=name):
            read_torch_checkpoint(p)
    # a storage shorter than the tensor needs (corrupt zip member)
    bad = tmp_path / "short.pth"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            blob = zin.read(info)
            zout.writestr(info.filename, blob[:100] if info.filename.endswith("data/0") else blob)
    with pytest.raises(CheckpointError, match="holds 100 bytes, expected 4000"):
        read_torch_checkpoint(bad)
    with pytest.raises(CheckpointError, match="truncated.pth: truncated or corrupt zip"):
        read_torch_checkpoint(tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_torch_checkpoint(tmp_path / "missing.pth")


def test_big_endian_checkpoint(tmp_path):
    """A file written on a big-endian machine (byteorder record "big") is byte-swapped."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    little = tmp_path / "le.pth"
    write_torch_checkpoint(little, {"state_dict": {"w": w, "n": np.arange(3, dtype=np.int64)}})
    big = tmp_path / "be.pth"
    with zipfile.ZipFile(little) as zin, zipfile.ZipFile(big, "w") as zout:
        for name in zin.namelist():
            blob = zin.read(name)
            if name.endswith("byteorder"):
                blob = b"big"
            elif name.endswith("data/0"):
                blob = np.frombuffer(blob, "<f4").astype(">f4").tobytes()
            elif name.endswith("data/1"):
                blob = np.frombuffer(blob, "<i8").astype(">i8").tobytes()
            zout.writestr(name, blob)
    got = read_torch_checkpoint(big)
    np.testing.assert_array_equal(got["w"], w)
    np.testing.assert_array_equal(got["n"], [0, 1, 2])


def test_no_tensors_is_an_error(tmp_path):
    p = tmp_path / "meta.pth"
    write_torch_checkpoint(p, {"epoch": 3, "meta": {"a": 1}})
    with pytest.raises(CheckpointError, match="no tensors found.*epoch"):
        read_torch_checkpoint(p)


def test_reader_never_imports_torch_or_tensorflow(tmp_path):
    p = tmp_path / "w.pth"
    write_torch_checkpoint(p, {"state_dict": {"module.w": np.ones((2, 3), np.float32)}})
    code = ("import sys; from kdet.convert import read_torch_checkpoint as r; "
            f"sd = r({str(p)!r}); assert list(sd) == ['w'], sd; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_writer_roundtrip_without_torch(tmp_path):
    sd = collections.OrderedDict(
        a=np.random.default_rng(0).standard_normal((3, 4, 2, 2)).astype(np.float32),
        b=np.arange(5, dtype=np.int64), c=np.array([True, False]), d=np.float16([1.5, -2]),
        e=np.zeros((0, 3), np.float32), f=np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    p = tmp_path / "rt.pth"
    write_torch_checkpoint(p, {"state_dict": sd, "meta": {"epoch": 1}})
    assert load_torch_file(p)["meta"] == {"epoch": 1}
    back = read_torch_checkpoint(p)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(back[k], sd[k])


# ---- real files written by torch.save -------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="torch (test-only reference) is not installed; "
                               "reading torch.save files is checked with it")


@pytest.mark.torch
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_torch_save_all_dtypes_and_views(tmp_path, legacy):
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    sd = collections.OrderedDict(
        f32=torch.randn(4, 3, 3, 3, generator=g), f64=torch.randn(5, generator=g).double(),
        f16=torch.randn(7, generator=g).half(), bf16=torch.randn(9, generator=g).bfloat16(),
        i64=torch.arange(-5, 5), i32=torch.arange(4, dtype=torch.int32),
        u8=torch.arange(250, 256, dtype=torch.uint8), b=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5), empty=torch.zeros(0, 4),
        transposed=base.t(), sliced=base[1:5, 2::3], offset=base.view(-1)[7:19].view(3, 4),
        expanded=torch.randn(3, 1, generator=g).expand(3, 5),
        param=torch.nn.Parameter(torch.randn(2, 2, generator=g)))
    sd["num_batches_tracked"] = torch.tensor(17)
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state": sd, "epoch": 5, "cfg": "MODEL:\n  TYPE: regnet\n"}, path,
               _use_new_zipfile_serialization=not legacy)
    got = read_torch_checkpoint(path)
    assert list(got) == list(sd)
    for k, t in sd.items():
        t = t.detach()
        ref = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[k].shape == ref.shape and got[k].dtype == ref.dtype, k
        np.testing.assert_array_equal(got[k], ref, err_msg=k)
    assert load_torch_file(path)["epoch"] == 5


@pytest.mark.torch
def test_unwraps_nested_and_dataparallel(tmp_path):
    torch = _torch()
    w = torch.randn(2, 3)
    for wrapped in ({"state_dict": {"module.a.weight": w}},
                    {"model": {"module": {"a.weight": w}}},
                    {"meta": {"x": 1}, "state_dict": collections.OrderedDict({"a.weight": w})},
                    collections.OrderedDict({"a.weight": w})):
        path = tmp_path / "n.pth"
        torch.save(wrapped, path)
        got = read_torch_checkpoint(path)
        assert list(got) == ["a.weight"]
        np.testing.assert_array_equal(got["a.weight"], w.numpy())


@pytest.mark.torch
def test_written_checkpoint_loads_with_torch_weights_only(tmp_path):
    torch = _torch()
    sd = collections.OrderedDict(w=np.random.default_rng(1).standard_normal((8, 4, 3, 3)).astype(np.float32),
                                 n=np.arange(3, dtype=np.int64), h=np.float16([0.5]))
    p = tmp_path / "kdet.pth"
    write_torch_checkpoint(p, {"state_dict": sd, "meta": {"note": "kdet"}})
    for mmap in (False, True):
        back = torch.load(p, weights_only=True, mmap=mmap)
        assert back["meta"] == {"note": "kdet"}
        for k, v in sd.items():
            assert back["state_dict"][k].dtype == torch.from_numpy(v).dtype
            np.testing.assert_array_equal(back["state_dict"][k].numpy(), v)


class _UserClass:  # stands for e.g. mmengine's HistoryBuffer in a training checkpoint
    def __init__(self):
        self.values = [1, 2]


def test_skip_unknown_objects_keeps_tensors_and_runs_nothing(tmp_path, monkeypatch):
    from kdet.convert import torch_writer
    marker = tmp_path / "marker"
    wrap = torch_writer._wrap  # let the writer pickle foreign objects next to the tensors
    monkeypatch.setattr(torch_writer, "_wrap", lambda obj, st: obj if isinstance(
        obj, (_UserClass, _System)) else wrap(obj, st))
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    p = tmp_path / "train.pth"
    write_torch_checkpoint(p, {"state_dict": {"w": w},
                               "message_hub": {"hub": _UserClass(), "evil": _System(marker)}})
    with pytest.raises(CheckpointError, match=r"refused to load '.*_UserClass'.*inert placeholders"):
        read_torch_checkpoint(p)
    with pytest.warns(UserWarning, match=r"2 non-allowlisted globals were replaced by inert "
                      r"placeholders: .*\.system") as rec:
        got = read_torch_checkpoint(p, skip_unknown_objects=True)
    assert "test_torch_reader._UserClass" in str(rec[0].message)
    np.testing.assert_array_equal(got["w"], w)
    with pytest.warns(UserWarning):
        raw = load_torch_file(p, skip_unknown_objects=True)
    assert "not loaded: tests.convert.test_torch_reader._UserClass" in repr(raw["message_hub"]["hub"])
    assert not marker.exists()


def test_pickle_cannot_tamper_with_shared_objects(tmp_path):
    """BUILD with slot state on an allowlisted global must not reach a shared object (here:
    set collections.Counter.__init__), and numpy arrays inside checkpoints still load."""
    p = tmp_path / "tamper.pth"
    # GLOBAL collections.Counter; GLOBAL builtins.set; build {None-state, {"__init__": set}}
    payload = (b"\x80\x02ccollections\nCounter\nN}X\x08\x00\x00\x00__init__c__builtin__\nset\n"
               b"s\x86b.")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", payload)
    with pytest.raises(CheckpointError, match="expected a state dict|no tensors"):
        read_torch_checkpoint(p)
    assert collections.Counter.__init__ is not set and collections.Counter("aab")["a"] == 2
    # plain numpy arrays/scalars (e.g. in mmcv meta) are allowed
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(
            {"meta": {"a": np.arange(3.0), "s": np.float32(2.5)}, "state_dict": {}}, protocol=2))
    raw = load_torch_file(p)
    np.testing.assert_array_equal(raw["meta"]["a"], np.arange(3.0))
    assert raw["meta"]["s"] == np.float32(2.5)
