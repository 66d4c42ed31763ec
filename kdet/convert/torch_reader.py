"""Read PyTorch checkpoints into numpy arrays without importing torch, safely.

Two on-disk formats exist (torch/serialization.py):

* zip (``torch.save`` default since 1.6): one top-level folder holding ``data.pkl``
  (the pickled object), ``data/<key>`` (raw storage bytes), ``byteorder`` and ``version``.
* legacy (``_use_new_zipfile_serialization=False``): a sequence of pickles -- magic number
  ``0x1950a86a20f9469cfc6c``, protocol version 1001, a sys-info dict, the object, the list
  of storage keys -- then per key an int64 element count and the raw bytes.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)`` whose ``storage`` arrives through ``persistent_load`` as
``("storage", torch.FloatStorage, key, location, numel[, view])``. The unpickler here
resolves only an allowlist of globals (tensor/storage rebuilding, plain containers, numpy
arrays) to kdet's own numpy implementations; any other global -- ``os.system``,
``builtins.eval``, a user class -- is refused with ``CheckpointError`` before anything runs.
"""
import _compat_pickle
import collections
import io
import os
import pickle
import struct
import tarfile
import warnings
import zipfile
import zlib

import numpy as np

from kdet.errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION

# torch legacy storage class -> numpy dtype (little-endian form; byte order fixed on read).
# bfloat16 has no numpy dtype: read as uint16 and widened to float32 exactly.
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}

# Keys under which trainers nest the state dict (mmcv/mmengine "state_dict", pycls
# "model_state", DeiT/detectron-style "model", DeepSpeed "module").
NESTED_KEYS = ("state_dict", "model_state", "model", "module")


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A flat storage: numpy 1-D array of ``numel`` elements (filled after unpickling for
    the legacy format)."""

    def __init__(self, dtype, numel, data=None):
        self.dtype, self.numel, self.data = dtype, int(numel), data


class _LazyTensor:
    """A tensor whose storage bytes may not be read yet (legacy format); see _materialise."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


class _TypeMarker:
    """``torch.Tensor`` / ``torch.nn.Parameter`` as seen by ``_rebuild_from_type_v2``."""

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """torch._utils._rebuild_tensor(_v2): a strided view into a storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild got {type(storage).__name__}, not a storage")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor has size {tuple(size)} but stride {tuple(stride)}")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is just its tensor here."""
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2, allowed only for plain Tensor / Parameter."""
    if not isinstance(new_type, _TypeMarker):
        raise CheckpointError(f"refused to rebuild a tensor of type {new_type!r}")
    return func(*args)


def _encode(text, encoding="latin1"):
    """_codecs.encode, which protocol-2 pickles use to store ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _np_reconstruct(cls, shape, typecode):
    """numpy.core.multiarray._reconstruct for plain ndarrays (state set by BUILD)."""
    if not (isinstance(cls, _TypeMarker) and cls.name == "numpy.ndarray"):
        raise CheckpointError(f"refused to rebuild numpy array type {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _np_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar for non-object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError(f"refused numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_dtype(name, align=False, copy=False):
    return np.dtype(name, align=align, copy=copy)


def _fresh(fn):
    """A new function object per load wrapping ``fn``: a pickle's BUILD opcode can set
    attributes on what ``find_class`` returns, and must not reach shared objects."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def _allowed_globals():
    """(module, name) -> what the unpickler may use. Immutable builtins (C types) are shared;
    every Python function/class is wrapped fresh, markers are new instances."""
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): _fresh(collections.Counter),
        ("torch._utils", "_rebuild_tensor"): _fresh(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _fresh(_rebuild_tensor),
        ("torch._utils", "_rebuild_parameter"): _fresh(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _fresh(_rebuild_parameter),
        ("torch._tensor", "_rebuild_from_type_v2"): _fresh(_rebuild_from_type_v2),
        ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
        ("torch", "Size"): tuple,
        ("torch", "device"): str,
        ("_codecs", "encode"): _fresh(_encode),
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray, ("builtins", "complex"): complex,
        ("numpy", "ndarray"): _TypeMarker("numpy.ndarray"), ("numpy", "dtype"): _fresh(_np_dtype),
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _fresh(_np_reconstruct)
        allowed[(mod, "scalar")] = _fresh(_np_scalar)
    for name in STORAGE_DTYPES:
        allowed[("torch", name)] = _StorageType(name)
        allowed[("torch.storage", name)] = allowed[("torch", name)]
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allowlisted globals; storages come from ``load_storage``.

    The allowlist is rebuilt per unpickler so that a pickle cannot mutate (BUILD) the
    marker objects another load will see.
    """

    def __init__(self, file, load_storage, unknown=None):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._allowed = _allowed_globals()
        self._unknown = unknown  # a list: stand in inert placeholders and record the names

    def find_class(self, module, name):
        # Python 2 names in protocol <= 2 pickles (__builtin__.set ...), as pickle itself maps.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = self._allowed.get((module, name))
        if obj is None and self._unknown is not None:
            self._unknown.append(f"{module}.{name}")
            return type(f"Unloaded_{name}", (_Opaque,), {"global_name": f"{module}.{name}"})
        if obj is None:
            raise CheckpointError(
                f"refused to load {module + '.' + name!r}: the checkpoint references a Python "
                "global outside kdet's allowlist (tensors, storages, plain containers); "
                "nothing was executed (skip_unknown_objects=True / --skip-unknown-objects "
                "reads the tensors and replaces such objects by inert placeholders)")
        return obj

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"bad persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) not in (5, 6):
            raise CheckpointError(f"unsupported persistent id {pid[:1]!r} (only storages)")
        return self._load_storage(*pid[1:])


class _Opaque:
    """Inert stand-in for an object of a non-allowlisted class (``skip_unknown_objects``):
    it absorbs constructor arguments and pickled state and runs nothing."""

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def add(self, value):
        pass

    def __repr__(self):
        return f"<not loaded: {self.global_name}>"


def _check_storage_type(storage_type):
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"storage of unknown type {storage_type!r}")
    return storage_type.dtype


def _raw_to_array(raw, dtype, byteorder):
    """Raw storage bytes -> 1-D native-endian numpy array (bfloat16 -> float32)."""
    order = "<" if byteorder == "little" else ">"
    if dtype == "bf16":
        bits = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(order))
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _element_size(dtype):
    return 2 if dtype == "bf16" else np.dtype(dtype).itemsize


def _materialise(obj):
    """Replace every _LazyTensor in a nested container with a numpy array (a copy)."""
    if isinstance(obj, _LazyTensor):
        st = obj.storage
        if st.data is None:
            raise CheckpointError("a tensor's storage bytes are missing (truncated file?)")
        if any(s < 0 for s in obj.size) or any(s < 0 for s in obj.stride):
            raise CheckpointError(f"negative tensor size/stride {obj.size}/{obj.stride}")
        numel = int(np.prod(obj.size, dtype=np.int64))
        last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride)) if numel else 0
        if obj.offset < 0 or (numel and last >= st.data.size):
            raise CheckpointError(
                f"tensor view (offset {obj.offset}, size {obj.size}, stride {obj.stride}) runs "
                f"past its storage of {st.data.size} elements (corrupt checkpoint)")
        if numel == 0:
            return np.zeros(obj.size, dtype=st.data.dtype)
        item = st.data.itemsize
        view = np.lib.stride_tricks.as_strided(
            st.data[obj.offset:], shape=obj.size, strides=[s * item for s in obj.stride],
            writeable=False)
        return np.array(view, copy=True)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _finish(obj, path):
    """_materialise with numpy/size errors reported as a corrupt checkpoint."""
    try:
        return _materialise(obj)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (ValueError, TypeError, MemoryError, RecursionError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None


def _load_zip(path, unknown):
    try:
        with zipfile.ZipFile(path) as zf:
            return _load_zip_members(zf, path, unknown)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt zip checkpoint ({e})") from None


def _load_zip_members(zf, path, unknown):
    """The object in a zip checkpoint, reading ``data/<key>`` storages as referenced."""
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise CheckpointError(f"{path}: zip file without <folder>/data.pkl; not a PyTorch "
                              "checkpoint (a TorchScript archive or another zip?)")
    root = pkl[0][:-len("data.pkl")]
    byteorder = "little"
    if root + "byteorder" in names:
        byteorder = zf.read(root + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byteorder {byteorder!r}")
    storages = {}

    def load_storage(storage_type, key, location, numel, *view):
        dtype = _check_storage_type(storage_type)
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in storages:
            name = f"{root}data/{key}"
            try:
                raw = zf.read(name)
            except KeyError:
                raise CheckpointError(f"{path}: storage record {name!r} is missing") from None
            if len(raw) < int(numel) * _element_size(dtype):
                raise CheckpointError(f"{path}: storage {name!r} holds {len(raw)} bytes, "
                                      f"expected {int(numel) * _element_size(dtype)}")
            raw = raw[:int(numel) * _element_size(dtype)]
            storages[key] = _Storage(dtype, numel, _raw_to_array(raw, dtype, byteorder))
        return storages[key]

    data = zf.read(pkl[0])
    obj = _unpickle(io.BytesIO(data), load_storage, path, unknown)
    return _finish(obj, path)


def _unpickle(f, load_storage, path, unknown=None):
    try:
        return _RestrictedUnpickler(f, load_storage, unknown).load()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, zipfile.BadZipFile, OSError, MemoryError,
            RecursionError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint "
                              f"({type(e).__name__}: {e})") from None


def _load_legacy(path, unknown):
    with open(path, "rb") as f:
        def head():
            return _unpickle(f, _no_storage, path)
        if head() != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (no zip archive, no "
                                  "legacy magic number)")
        protocol = head()
        if protocol != LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol!r}")
        sys_info = head()
        byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get(
            "little_endian", True) else "big"
        roots, views = {}, {}

        def load_storage(storage_type, root_key, location, numel, view_metadata=None):
            dtype = _check_storage_type(storage_type)
            root = roots.setdefault(str(root_key), _Storage(dtype, numel))
            if view_metadata is None:
                return root
            view_key, offset, size = view_metadata
            views.setdefault(str(view_key), (root, int(offset), int(size)))
            return _ViewStorage(root, int(offset), int(size))

        obj = _unpickle(f, load_storage, path, unknown)
        keys = _unpickle(f, _no_storage, path)
        for key in keys:
            st = roots.get(str(key))
            if st is None:
                raise CheckpointError(f"{path}: storage key {key!r} was never referenced")
            size = _element_size(st.dtype)
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointError(f"{path}: truncated checkpoint (storage {key!r} missing)")
            (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", header)
            raw = f.read(numel * size)
            if numel != st.numel or len(raw) != numel * size:
                raise CheckpointError(f"{path}: truncated or corrupt storage {key!r} "
                                      f"({len(raw)} of {st.numel * size} bytes)")
            st.data = _raw_to_array(raw, st.dtype, byteorder)
        return _finish(_resolve_views(obj), path)


class _ViewStorage(_Storage):
    """A legacy storage view (root, element offset, size) resolved after data is read."""

    def __init__(self, root, offset, size):
        super().__init__(root.dtype, size)
        self.root, self.offset = root, offset


def _resolve_views(obj):
    if isinstance(obj, _LazyTensor) and isinstance(obj.storage, _ViewStorage):
        v = obj.storage
        if v.root.data is not None:
            v.data = v.root.data[v.offset:v.offset + v.numel]
        return obj
    if isinstance(obj, dict):
        for v in obj.values():
            _resolve_views(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _resolve_views(v)
    return obj


def _no_storage(*args):
    raise CheckpointError("unexpected storage reference in a checkpoint header")


def load_torch_file(path, skip_unknown_objects=False):
    """The whole pickled object of a checkpoint, tensors as numpy arrays (no unwrapping).

    skip_unknown_objects: instead of refusing the file, replace each object of a class
        outside the allowlist (e.g. mmengine's ``HistoryBuffer`` in a training checkpoint's
        ``message_hub``) by an inert placeholder -- its code is still never imported or run --
        and warn with the names. Tensors inside such objects are not recovered.
    """
    path = os.fspath(path)
    unknown = [] if skip_unknown_objects else None
    obj = _load_any(path, unknown)
    if unknown:
        names = sorted(set(unknown))
        warnings.warn(f"{path}: objects of {len(names)} non-allowlisted globals were replaced "
                      f"by inert placeholders: {', '.join(names)}", stacklevel=2)
    return obj


def _load_any(path, unknown):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if zipfile.is_zipfile(path):
        return _load_zip(path, unknown)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise CheckpointError(f"{path}: truncated or corrupt zip checkpoint (no central "
                                  "directory)")
    if tarfile.is_tarfile(path) and _looks_like_torch_tar(path):
        raise CheckpointError(f"{path}: PyTorch < 0.4 tar checkpoints are not supported; "
                              "re-save it with a newer torch")
    return _load_legacy(path, unknown)


def _looks_like_torch_tar(path):
    try:
        with tarfile.open(path) as t:
            return {"storages", "tensors", "pickle"} <= set(t.getnames())
    except (tarfile.TarError, OSError):
        return False


def extract_state_dict(obj, path="checkpoint"):
    """Unwrap ``{"state_dict": ...}`` / ``{"model_state": ...}`` / ``{"model": ...}`` /
    ``{"module": ...}`` and DataParallel's ``module.`` prefix -> ``{name: np.ndarray}``."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    arrays = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not arrays:
        raise CheckpointError(f"{path}: no tensors found (top-level keys: "
                              f"{', '.join(map(str, list(obj)[:10]))})")
    if all(k.startswith("module.") for k in arrays):
        arrays = {k[len("module."):]: v for k, v in arrays.items()}
    return arrays


def read_torch_checkpoint(path, map_location=None, skip_unknown_objects=False):
    """PyTorch checkpoint (zip or legacy format) -> ``{name: np.ndarray}``; no torch needed.

    Nested checkpoints are unwrapped (see ``extract_state_dict``). Tensors come back as
    contiguous numpy arrays in PyTorch layout (conv weight [out, in/groups, kh, kw]);
    bfloat16 becomes float32. ``map_location`` is accepted for torch.load compatibility and
    ignored (everything is read to host memory). Raises ``CheckpointError`` for a missing,
    truncated, corrupt or unsafe file. ``skip_unknown_objects``: see ``load_torch_file``.
    """
    del map_location
    obj = load_torch_file(path, skip_unknown_objects=skip_unknown_objects)
    return extract_state_dict(obj, os.fspath(path))
