"""The op-library build: cache reuse, concurrent builders, no compiler, nvcc compile check."""
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import tensorflow as tf

import kdet.ops as ops
from kdet.custom_ops import build
from kdet.errors import KdetError
from kdet.ops import _dispatch

REPO = Path(__file__).resolve().parents[2]

TINY_OP = textwrap.dedent("""
    #include "tensorflow/core/framework/op.h"
    #include "tensorflow/core/framework/op_kernel.h"
    REGISTER_OP("KdetTestAddOne").Input("x: float").Output("y: float");
    class AddOne : public tensorflow::OpKernel {
     public:
      using OpKernel::OpKernel;
      void Compute(tensorflow::OpKernelContext* ctx) override {
        tensorflow::Tensor* out = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &out));
        auto in = ctx->input(0).flat<float>();
        auto o = out->flat<float>();
        for (int64_t i = 0; i < in.size(); ++i) o(i) = in(i) + 1.0f;
      }
    };
    REGISTER_KERNEL_BUILDER(Name("KdetTestAddOne").Device(tensorflow::DEVICE_CPU), AddOne);
""")

BUILD_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from kdet.custom_ops import build
    build.SOURCE_DIR = Path(sys.argv[1])
    path = build.build(verbose=True)
    import tensorflow as tf
    lib = tf.load_op_library(str(path))
    print("RESULT", path, float(lib.kdet_test_add_one(tf.constant(1.0))))
""")

needs_cxx = pytest.mark.skipif(build.find_cxx() is None, reason="no C++ compiler (g++) here")


@pytest.fixture
def tiny_sources(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "add_one.cc").write_text(TINY_OP)
    monkeypatch.setenv("KDET_CACHE_DIR", str(tmp_path / "cache"))
    return src


@needs_cxx
def test_library_is_cached_per_tf_version_and_reused():
    path = build.build(verbose=False)
    assert f"-tf{tf.__version__}" in path.name and path.exists()
    mtime = path.stat().st_mtime_ns
    assert build.build(verbose=False) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    info = build.info()
    assert info["built"] and info["library"] == str(path)
    assert set(info["sources"]) >= {"roi_align.cc"}


@needs_cxx
def test_source_change_changes_the_cache_key(tiny_sources, monkeypatch):
    monkeypatch.setattr(build, "SOURCE_DIR", tiny_sources)
    before = build.plan()["library"]
    (tiny_sources / "add_one.cc").write_text(TINY_OP + "\n// edited\n")
    assert build.plan()["library"] != before


FAKE_CXX = textwrap.dedent("""\
    #!/bin/sh
    # logs each call, is slow enough for builders to overlap, then runs the real compiler
    echo "$@" >> "$KDET_TEST_CXX_LOG"
    sleep 1
    exec {cxx} "$@"
""")


@needs_cxx
def test_concurrent_builders_share_one_build(tmp_path, monkeypatch):
    """Two threads build at once: the lock makes one compile+link, the other reuse it."""
    import ctypes
    import threading

    src = tmp_path / "src"
    src.mkdir()
    (src / "answer.cc").write_text('extern "C" int kdet_answer() { return 42; }\n')
    cxx = tmp_path / "fake-g++"
    cxx.write_text(FAKE_CXX.format(cxx=build.find_cxx()))
    cxx.chmod(0o755)
    log = tmp_path / "cxx.log"
    monkeypatch.setenv("KDET_TEST_CXX_LOG", str(log))
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setenv("KDET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "SOURCE_DIR", src)
    paths, errors = [], []

    def builder():
        try:
            paths.append(build.build(verbose=False))
        except Exception as e:  # noqa: BLE001 -- reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(paths) == 2 and paths[0] == paths[1]
    calls = [c for c in log.read_text().splitlines() if c != "--version"]
    assert sum(" -c " in c for c in calls) == 1, calls  # one compile
    assert sum(" -c " not in c and "-shared" in c for c in calls) == 1, calls  # one link
    assert ctypes.CDLL(str(paths[0])).kdet_answer() == 42
    assert len(list((tmp_path / "cache").glob("*.so"))) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.slow
@needs_cxx
def test_concurrent_builds_produce_one_working_library(tiny_sources):
    """Two processes build a real TF op at once; both load the one library and run the op."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(tiny_sources)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [line.split() for out in outs for line in out.splitlines()
               if line.startswith("RESULT")]
    assert len(results) == 2 and results[0][1] == results[1][1]
    assert all(r[2] == "2.0" for r in results)
    compiles = sum(line.count(" -c ") for out in outs for line in out.splitlines()
                   if line.startswith("kdet ops:"))
    assert compiles == 1  # the second process waited on the lock and reused the result
    cache = Path(os.environ["KDET_CACHE_DIR"])
    assert len(list(cache.glob("*.so"))) == 1
    assert not list(cache.rglob("*.tmp"))


@needs_cxx
def test_compile_error_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken.cc").write_text("this is not C++;\n")
    monkeypatch.setenv("KDET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "SOURCE_DIR", tmp_path)
    with pytest.raises(build.BuildError, match="compiling broken.cc failed"):
        build.build(verbose=False)


@pytest.fixture
def fresh_load_state():
    build.reset()
    yield
    build.reset()  # the next load_library() finds the real, cached library again


def test_no_compiler_warns_once_and_falls_back_to_twin(tmp_path, monkeypatch, fresh_load_state):
    monkeypatch.setenv("KDET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "kdet-no-such-compiler")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        assert build.load_library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert build.load_library() is None
        assert _dispatch.select("auto", op="kdet_roi_align") == "tf"
        out = ops.roi_align(tf.ones([1, 4, 4, 2]), [[0, 0, 0, 4, 4]], 2)
    assert out.shape == (1, 2, 2, 2)
    with pytest.raises(KdetError, match="op library is unavailable.*no C\\+\\+ compiler"):
        _dispatch.select("custom", op="kdet_roi_align")
    assert "no C++ compiler" in build.info()["reason"]


def test_disabled_by_environment(monkeypatch, fresh_load_state):
    monkeypatch.setenv("KDET_CUSTOM_OPS", "0")
    assert build.load_library() is None
    assert _dispatch.select(None) == "tf"
    assert "KDET_CUSTOM_OPS=0" in build.info()["reason"]


@pytest.mark.slow  # 2-7 min on 2 shared cores the first time; then cached per source hash
@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not found: CUDA sources not checked")
@needs_cxx
def test_cuda_sources_compile_with_nvcc():
    """nvcc compiles every *.cu.cc to device code, and g++ compiles every *.cc with
    GOOGLE_CUDA=1 (the GPU kernel registrations). Compile only: no GPU is needed. Cached by
    source hash, so only the first run after a change pays (~1-2 min)."""
    assert build.cuda_sources(), "no CUDA sources found"
    objects = build.compile_cuda_check()
    for src in build.cuda_sources():
        obj = next(o for o in objects if o.name == src.name + ".o")
        data = obj.read_bytes()
        assert b".nv_fatbin" in data or b"__nv_module_id" in data, f"{obj} has no device code"
    assert {o.name for o in objects} >= {"roi_align.cu.cc.o", "roi_align.cc.o"}


@needs_cxx
def test_cli_ops_info_and_build(capsys):
    from kdet.cli import main
    assert main(["ops", "info"]) == 0
    out = capsys.readouterr().out
    assert "roi_align runs" in out and "custom outside XLA" in out and tf.__version__ in out
    assert main(["ops", "build", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "kdet_roi_align" in out and str(build.plan()["library"]) in out


def test_cli_ops_build_without_compiler_is_one_line_error(monkeypatch, tmp_path, capsys):
    from kdet.cli import main
    monkeypatch.setenv("KDET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "kdet-no-such-compiler")
    assert main(["ops", "build"]) == 2
    assert "no C++ compiler found" in capsys.readouterr().err
