"""Write a PyTorch zip checkpoint from numpy arrays without torch.

The file has torch.save's layout (torch/serialization.py ``_save``): a top-level folder
``archive/`` with ``data.pkl`` (protocol-2 pickle), ``data/<key>`` (raw little-endian bytes,
each aligned to 64 bytes in the file as torch's writer does), ``byteorder`` and ``version``.
Each array is pickled as ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride,
False, OrderedDict())`` with the storage as persistent id ``("storage", torch.FloatStorage,
key, "cpu", numel)``, so ``torch.load(path, weights_only=True)`` reads it back.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from kdet.errors import KdetError

_STORAGE_NAMES = {np.dtype(k): v for k, v in {
    "f8": "DoubleStorage", "f4": "FloatStorage", "f2": "HalfStorage", "i8": "LongStorage",
    "i4": "IntStorage", "i2": "ShortStorage", "i1": "CharStorage", "u1": "ByteStorage",
    "?": "BoolStorage", "c8": "ComplexFloatStorage", "c16": "ComplexDoubleStorage"}.items()}
_ALIGN = 64  # torch's storage alignment (serialization._get_storage_alignment)
_FILE_VERSION = b"3\n"  # torch.save's archive/version record


class _Global:
    """A pickled reference ``module.name`` to a torch global (written, never called)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce requires a callable
        raise TypeError(f"{self.module}.{self.name} is a pickling marker")


_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")
_ORDERED_DICT = _Global("collections", "OrderedDict")


class _StorageRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _TensorRef:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        a = self.storage.array
        item = a.itemsize
        stride = tuple(s // item for s in a.strides) if a.ndim else ()
        return (_REBUILD, (self.storage, 0, tuple(a.shape), stride, False, _Hooks()))


class _Hooks:
    """An empty OrderedDict of backward hooks, pickled as ``collections.OrderedDict()``."""

    def __reduce__(self):
        return (_ORDERED_DICT, ())


class _TorchPickler(pickle._Pickler):  # the Python pickler: it lets us add a dispatch entry
    dispatch = dict(pickle._Pickler.dispatch)

    def save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = save_torch_global

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            a = obj.array
            return ("storage", _Global("torch", _STORAGE_NAMES[a.dtype]), obj.key, "cpu", a.size)
        return None


def _wrap(obj, storages):
    """Replace numpy arrays by _TensorRef (registering their storages) in a nested object."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.newbyteorder("<") not in _STORAGE_NAMES:
            raise KdetError(f"cannot write a {a.dtype} array into a PyTorch checkpoint")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        ref = _StorageRef(str(len(storages)), a)
        storages.append(ref)
        return _TensorRef(ref)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _wrap(v, storages)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _wrap(v, storages) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_wrap(v, storages) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise KdetError(f"cannot write a {type(obj).__name__} into a PyTorch checkpoint")


def _aligned_info(zf, name, fp_offset):
    """A ZipInfo whose data starts at a multiple of _ALIGN (padding in the extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode("utf-8"))
    pad = (-(fp_offset + header + 4)) % _ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # id "FB", as torch's writer
    return info


def write_torch_checkpoint(path, obj):
    """Write ``obj`` (nested dicts/lists of numpy arrays and plain values, e.g.
    ``{"state_dict": OrderedDict(name -> array)}``) as a PyTorch zip checkpoint."""
    path = os.fspath(path)
    storages = []
    wrapped = _wrap(obj, storages)
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(wrapped)
    records = [("data.pkl", buf.getvalue()), ("byteorder", b"little")]
    records += [(f"data/{s.key}", s.array.tobytes()) for s in storages]
    records.append(("version", _FILE_VERSION))
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            zf.writestr(_aligned_info(zf, f"archive/{name}", f.tell()), data)
    return path
