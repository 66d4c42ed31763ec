"""Build-on-first-use of kdet's C++ (and CUDA) TensorFlow ops, cached per TensorFlow version.

Every ``kdet/custom_ops/*.cc`` file (CPU kernels and op registrations) is compiled with the
flags of the *installed* TensorFlow (``tf.sysconfig``) and linked into one shared library.
When TensorFlow is built with CUDA and ``nvcc`` is found, every ``*.cu.cc`` file is compiled
with nvcc as well and linked in (``-DGOOGLE_CUDA=1`` then also reaches the ``.cc`` files, so
their GPU kernel registrations are compiled).

A prebuilt ``.so`` breaks across TensorFlow versions (TensorFlow's C++ ABI is not stable),
so nothing is shipped prebuilt: the library is built from source once and cached in
``$KDET_CACHE_DIR`` (default ``~/.cache/kdet/ops``), under a name that carries the TensorFlow
version and a hash of the sources, the compiler and its flags. Object files are cached by the
same rule, one per source, so editing one kernel recompiles only that file. Concurrent builds
(several test workers, several training processes) serialise on an ``fcntl`` lock, and every
file lands by atomic rename, so a reader never sees half a library.

Environment:
  KDET_CACHE_DIR      cache folder (default ``~/.cache/kdet/ops``)
  KDET_CUSTOM_OPS=0   never build or load the library; the pure-TF twins are used
  CXX                 C++ compiler (default ``g++``)
  KDET_NVCC           nvcc to use (default: ``nvcc`` on PATH, else ``$CUDA_HOME/bin/nvcc``)
  KDET_CUDA=0         do not compile CUDA sources even when TensorFlow has CUDA
  KDET_CUDA_ARCHS     comma-separated SM versions for nvcc (default ``75,80,86,89,90``)
  KDET_MARCH          g++ ``-march`` value (default ``native``; empty: the compiler's default)
"""
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from kdet.errors import KdetError

SOURCE_DIR = Path(__file__).resolve().parent
LIBRARY_STEM = "libkdet_ops"
DEFAULT_CUDA_ARCHS = "75,80,86,89,90"  # Turing .. Hopper; CUDA 13 no longer targets Volta (70)

# Our own flags, on top of tf.sysconfig's (which give -D_GLIBCXX_USE_CXX11_ABI=1 --std=c++17
# -DEIGEN_MAX_ALIGN_BYTES=64 for the TF 2.21 wheels).
CXX_FLAGS = ("-std=c++17", "-shared", "-fPIC", "-O3", "-DNDEBUG")
NVCC_FLAGS = ("-std=c++17", "--expt-relaxed-constexpr", "-DGOOGLE_CUDA=1", "-DNDEBUG",
              "-O2", "-Xcompiler", "-fPIC", "-x", "cu")


class BuildError(KdetError):
    """The custom-op library could not be built (no compiler, compile or link error)."""


# ----------------------------------------------------------------------------- configuration

def cache_dir():
    """The folder holding built libraries and objects (created on demand)."""
    return Path(os.environ.get("KDET_CACHE_DIR") or Path.home() / ".cache" / "kdet" / "ops")


def disabled():
    """True when ``KDET_CUSTOM_OPS=0`` (or ``false``/``off``) asks never to build or load."""
    return os.environ.get("KDET_CUSTOM_OPS", "1").strip().lower() in ("0", "false", "off", "no")


def cpu_sources():
    """Sorted ``*.cc`` files that are not CUDA sources."""
    return sorted(p for p in SOURCE_DIR.glob("*.cc") if not p.name.endswith(".cu.cc"))


def cuda_sources():
    return sorted(SOURCE_DIR.glob("*.cu.cc"))


def headers():
    return sorted([*SOURCE_DIR.glob("*.h"), *SOURCE_DIR.glob("*.cuh")])


def find_cxx():
    """Path of the C++ compiler or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def find_nvcc():
    """Path of nvcc or None."""
    explicit = os.environ.get("KDET_NVCC")
    if explicit:
        return shutil.which(explicit)
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def cuda_home(nvcc):
    """The CUDA toolkit root: ``$CUDA_HOME``/``$CUDA_PATH``, nvcc's ``<root>/bin/nvcc``, or
    ``/usr/local/cuda`` -- the first that has ``include/cuda_fp16.h`` (nvcc may be a wrapper)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  Path(os.path.realpath(nvcc)).parent.parent, "/usr/local/cuda"]
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_fp16.h").exists():
            return Path(c)
    raise BuildError(f"cannot find the CUDA toolkit headers for {nvcc} (set CUDA_HOME)")


def _tf():
    import tensorflow as tf
    return tf


def cuda_wanted():
    """(bool, reason): compile CUDA sources? Needs a CUDA TensorFlow build and nvcc."""
    if os.environ.get("KDET_CUDA", "1").strip().lower() in ("0", "false", "off", "no"):
        return False, "KDET_CUDA=0"
    if not _tf().test.is_built_with_cuda():
        return False, "the installed TensorFlow is not built with CUDA"
    if find_nvcc() is None:
        return False, "nvcc not found (set KDET_NVCC or CUDA_HOME)"
    return True, "TensorFlow is built with CUDA and nvcc is present"


@functools.lru_cache(maxsize=None)
def _tool_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tf_compile_flags():
    return list(_tf().sysconfig.get_compile_flags())


def tf_link_flags():
    return list(_tf().sysconfig.get_link_flags())


def cuda_archs():
    raw = os.environ.get("KDET_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
    archs = [a.strip().replace("sm_", "").replace(".", "") for a in raw.split(",") if a.strip()]
    if not archs or not all(a.isdigit() for a in archs):
        raise BuildError(f"KDET_CUDA_ARCHS={raw!r}: expected comma-separated SM versions "
                         "like 80,90")
    return archs


def nvcc_arch_flags(archs):
    """SASS for every arch plus PTX for the newest, so newer GPUs can JIT it."""
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def cuda_include_shim(nvcc, root=None):
    """A folder providing ``third_party/gpus/cuda/include`` -> the toolkit's ``include``.

    TensorFlow's headers include ``third_party/gpus/cuda/include/cuda_fp16.h``, which the
    wheels do not ship; this shim points that path at the local CUDA toolkit.
    """
    root = Path(root or cache_dir()) / "cuda_shim"
    link = root / "third_party" / "gpus" / "cuda" / "include"
    target = cuda_home(nvcc) / "include"
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.parent / f".include.{os.getpid()}.{threading.get_ident()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)  # atomic: concurrent builders agree on the same link
    return root


def _hash(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _headers_digest():
    return _hash(*[p.name + ":" + _hash(p.read_bytes()) for p in headers()])


# ----------------------------------------------------------------------------- commands

def cpu_arch_flags():
    """``-march=native`` unless ``KDET_MARCH`` says otherwise (empty: compiler default).

    The library is built on the machine that runs it, so kernels may use its vector units: with
    AVX2/AVX-512 the deformable-convolution GEMMs run ~4x faster than with the x86-64 baseline
    (docs/BENCHMARKS.md). The object cache key carries the CPU's feature flags
    (`_cpu_fingerprint`), so a cache shared by different CPUs never mixes their builds.
    """
    march = os.environ.get("KDET_MARCH", "native").strip()
    return [f"-march={march}"] if march else []


@functools.lru_cache(maxsize=None)
def _cpu_fingerprint():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((ln for ln in lines if ln.startswith(("flags", "Features"))), "")
    return _hash(os.uname().machine, flags)[:16]


def cxx_object_command(cxx, src, out, nvcc=None):
    """g++ command for one ``.cc``; with ``nvcc`` (a CUDA build) GPU registrations are on."""
    flags = [f for f in (*CXX_FLAGS, *cpu_arch_flags(), *tf_compile_flags()) if f != "-shared"]
    if nvcc is not None:
        flags += ["-DGOOGLE_CUDA=1", f"-I{cuda_include_shim(nvcc)}",
                  f"-I{cuda_home(nvcc) / 'include'}"]
    return [cxx, *flags, f"-I{SOURCE_DIR}", "-c", str(src), "-o", str(out)]


def nvcc_object_command(nvcc, src, out, archs=None):
    shim = cuda_include_shim(nvcc)
    # nvcc spells the standard "-std=c++17"; tf.sysconfig gives g++'s "--std=c++17".
    tf_flags = [f for f in tf_compile_flags() if not f.startswith("--std")]
    return [nvcc, *NVCC_FLAGS, *nvcc_arch_flags(archs or cuda_archs()), *tf_flags,
            f"-I{shim}", f"-I{SOURCE_DIR}", "-c", str(src), "-o", str(out)]


def link_command(cxx, objects, out, nvcc=None):
    cmd = [cxx, "-shared", "-fPIC", *map(str, objects), "-o", str(out), *tf_link_flags()]
    if nvcc is not None:
        # cudart linked statically, so the .so does not depend on the toolkit's libcudart
        # version at run time (TensorFlow's own CUDA libraries are still loaded by TF).
        lib = cuda_home(nvcc) / "lib64"
        cmd += [f"-L{lib}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
    return cmd


def _run(cmd, what, verbose):
    if verbose:
        print("kdet ops:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-25:]
        raise BuildError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))


@contextlib.contextmanager
def _file_lock(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _atomic_output(final):
    """A temporary path next to ``final`` (same filesystem, so os.replace is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


# ----------------------------------------------------------------------------- plan

def plan():
    """What a build would do: compilers, flags, sources and the cached library path.

    Returns a dict (also the basis of ``info()``); raises nothing for a missing compiler,
    it reports ``cxx: None`` instead.
    """
    tf = _tf()
    cxx = find_cxx()
    use_cuda, cuda_reason = cuda_wanted()
    nvcc = find_nvcc() if use_cuda else None
    cpu, gpu = cpu_sources(), (cuda_sources() if use_cuda else [])
    hdr = _headers_digest()
    objects = []
    for src in cpu:
        flags = cxx_object_command(cxx or "g++", src, "OUT", nvcc)
        key = _hash("cxx", _tool_version(cxx) if cxx else "none", flags, hdr, src.read_bytes(),
                    _cpu_fingerprint())
        objects.append((src, key[:20], "cxx"))
    archs = cuda_archs() if use_cuda else []
    for src in gpu:
        key = _hash("nvcc", _tool_version(nvcc), NVCC_FLAGS, archs, tf_compile_flags(), hdr,
                    src.read_bytes())
        objects.append((src, key[:20], "nvcc"))
    lib_key = _hash(tf.__version__, tf_link_flags(), use_cuda, *[k for _, k, _ in objects])
    name = f"{LIBRARY_STEM}-tf{tf.__version__}{'-cuda' if use_cuda else ''}-{lib_key[:16]}.so"
    return {
        "tensorflow": tf.__version__,
        "cxx": cxx,
        "cxx_version": _tool_version(cxx) if cxx else None,
        "cuda": use_cuda,
        "cuda_reason": cuda_reason,
        "nvcc": nvcc,
        "cuda_archs": archs,
        "sources": [str(s.name) for s in cpu + gpu],
        "objects": objects,
        "library": cache_dir() / name,
    }


def build(force=False, verbose=True):
    """Build (or reuse) the op library and return its path.

    Args:
      force: recompile every object and relink even when cached.
      verbose: print each compiler command.
    Raises:
      BuildError: no C++ compiler, no sources, or a compile/link error (message carries
        the compiler's last lines).
    """
    p = plan()
    if p["cxx"] is None:
        raise BuildError(f"no C++ compiler found (looked for {os.environ.get('CXX', 'g++')!r}; "
                         "install g++ or set CXX)")
    if not p["objects"]:
        raise BuildError(f"no C++ sources in {SOURCE_DIR}")
    lib = p["library"]
    if lib.exists() and not force:
        return lib
    obj_dir = cache_dir() / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir() / (lib.name + ".lock")):
        if lib.exists() and not force:  # another process built it while we waited
            return lib
        objects = []
        for src, key, tool in p["objects"]:
            obj = obj_dir / f"{src.name}.{key}.o"
            objects.append(obj)
            with _file_lock(obj_dir / (obj.name + ".lock")):
                if obj.exists() and not force:
                    continue
                tmp = _atomic_output(obj)
                try:
                    if tool == "cxx":
                        cmd = cxx_object_command(p["cxx"], src, tmp, p["nvcc"])
                    else:
                        cmd = nvcc_object_command(p["nvcc"], src, tmp, p["cuda_archs"])
                    _run(cmd, f"compiling {src.name}", verbose)
                    os.replace(tmp, obj)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
        tmp = _atomic_output(lib)
        try:
            _run(link_command(p["cxx"], objects, tmp, p["nvcc"]), "linking", verbose)
            os.replace(tmp, lib)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return lib


def compile_cuda_check(out_dir=None, archs=("80",), verbose=False):
    """Compile every source as a CUDA build would, whatever TensorFlow was built with.

    ``*.cu.cc`` go through nvcc and ``*.cc`` through g++ with ``-DGOOGLE_CUDA=1`` (their GPU
    kernel registrations), into object files; nothing is linked or loaded. This keeps the CUDA
    sources compiling on machines without a GPU. With ``out_dir=None`` the objects go to
    ``<cache>/cuda_check/<hash of sources, tools and flags>/`` and a passed check is not
    repeated for unchanged sources. Returns the object paths.
    Raises BuildError when nvcc or g++ is missing or a file does not compile.
    """
    nvcc, cxx = find_nvcc(), find_cxx()
    if nvcc is None or cxx is None:
        raise BuildError(f"CUDA compile check needs nvcc and g++ (nvcc={nvcc}, g++={cxx})")
    cu, cc = cuda_sources(), cpu_sources()
    stamp = None
    if out_dir is None:
        key = _hash(_tool_version(nvcc), _tool_version(cxx), NVCC_FLAGS, CXX_FLAGS, archs,
                    tf_compile_flags(), _headers_digest(),
                    *[p.name + _hash(p.read_bytes()) for p in cu + cc])
        out_dir = cache_dir() / "cuda_check" / key[:20]
        stamp = out_dir / "passed"
    out_dir = Path(out_dir)
    objects = [out_dir / (src.name + ".o") for src in cu + cc]
    if stamp is not None and stamp.exists() and all(o.exists() for o in objects):
        return objects
    with _file_lock(out_dir / "lock"):  # concurrent checks of the same sources take turns
        if stamp is not None and stamp.exists() and all(o.exists() for o in objects):
            return objects
        if stamp is not None:
            stamp.unlink(missing_ok=True)
        for src, obj in zip(cu + cc, objects):
            if src in cu:
                cmd, what = nvcc_object_command(nvcc, src, obj, list(archs)), f"nvcc {src.name}"
            else:
                cmd = cxx_object_command(cxx, src, obj, nvcc)
                what = f"g++ -DGOOGLE_CUDA=1 {src.name}"
            _run(cmd, what, verbose)
        if stamp is not None:
            stamp.write_text("ok\n")
    return objects


# ----------------------------------------------------------------------------- loading

_LOCK = threading.Lock()
_STATE = {"tried": False, "module": None, "path": None, "reason": None}


def load_library():
    """The ``tf.load_op_library`` module of kdet's ops, or None (then the twins are used).

    Builds on first call if needed. A failure (no compiler, build error, load error) warns
    once, naming the reason, and every later call returns None without retrying.
    """
    with _LOCK:
        if _STATE["tried"]:
            return _STATE["module"]
        _STATE["tried"] = True
        if disabled():
            _STATE["reason"] = "disabled by KDET_CUSTOM_OPS=0"
            return None
        try:
            p = plan()
            if p["cxx"] and not p["library"].exists():  # say why the first call pauses
                print(f"kdet: compiling the custom ops for TensorFlow {_tf().__version__} into "
                      f"{cache_dir()} (once; `kdet ops build` does it ahead of time)...",
                      file=sys.stderr, flush=True)
            path = build(verbose=False)
            _STATE["module"] = _tf().load_op_library(str(path))
            _STATE["path"] = path
            _STATE["reason"] = f"loaded {path}"
        except Exception as e:  # noqa: BLE001 -- any failure degrades to the twins, loudly once
            _STATE["reason"] = f"{type(e).__name__}: {e}"
            warnings.warn(
                "kdet custom ops are unavailable, using the pure-TensorFlow implementations "
                f"(slower on CPU). Reason: {_STATE['reason']}. Run `kdet ops build` to see the "
                "full build log.", RuntimeWarning, stacklevel=2)
        return _STATE["module"]


def reset():
    """Forget the load attempt (tests; a fresh ``load_library()`` tries again)."""
    with _LOCK:
        _STATE.update(tried=False, module=None, path=None, reason=None)


def info():
    """What is active and why: a dict for ``kdet ops info``.

    Keys: tensorflow, cxx, cxx_version, cuda, cuda_reason, nvcc, sources, library (path),
    built (bool), loaded (bool), reason (why loaded / not loaded; None before any attempt).
    """
    p = plan()
    p.pop("objects")
    p["library"] = str(p["library"])
    p["built"] = Path(p["library"]).exists()
    p["cache_dir"] = str(cache_dir())
    p["disabled"] = disabled()
    p["loaded"] = _STATE["module"] is not None
    p["reason"] = _STATE["reason"]
    return p
