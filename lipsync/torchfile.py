"""Reading pickled weights files without torch, and safely: PyTorch's zip (>= 1.6, TorchScript) and legacy
(< 1.6) containers, and plain pickles such as paddle's .pdparams.

A restricted unpickler builds only checkpoint building blocks (tensors, storages, numpy arrays, dicts), so
loading a file can never run code; tensors are recorded as references and copied out of their storages
once the file is parsed. What the file holds around its weights is the caller's business (lipsync.checkpoint).
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Mapping, Tuple, Union

import numpy as np

from .errors import LipSyncError

PathLike = Union[str, Path]
Select = Callable[[Any], Mapping[str, Any]]  # what the file holds → its name → tensor mapping

# File formats, told apart by content.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file (torch >= 1.6, TorchScript), or an empty zip
PICKLE_PROTO = 0x80  # first byte of a protocol >= 2 pickle (torch legacy, paddle .pdparams)
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a torch < 1.6 file
TORCH_LEGACY_PROTOCOL = 1001  # second pickle of a torch < 1.6 file
LEGACY_NUMEL = struct.Struct("<q")  # element count written before each legacy storage's bytes
ZIP_PICKLE = "data.pkl"

BFLOAT16 = "bfloat16"  # numpy has no bfloat16: read as uint16, widened to float32
STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": BFLOAT16,
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# Anything these raise while reading means the file is not what it claims to be.
DAMAGE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    NotImplementedError,
    RecursionError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a torch storage class such as torch.FloatStorage."""

    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; `offset`/`numel` select a legacy storage view."""

    key: str
    dtype: str
    numel: int
    offset: int = 0


@dataclass(frozen=True)
class TensorRef:
    """A tensor as torch pickles it: a strided window into a storage, read once the file is parsed."""

    storage: _StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


class ScriptObject:
    """Stands in for a TorchScript module object: keeps its attributes, runs nothing."""

    attributes: Dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.attributes = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_hooks_and_metadata: Any) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2), recorded instead of run."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    return TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_grad_hooks_state: Any) -> Any:
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
    return data


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it to carry bytes (numpy array data)."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"unexpected text encoding {encoding!r}")
    return text.encode("latin1")


def _paddle_lod_tensor(expression: Any, namespace: Any) -> np.ndarray:
    """paddle.save pickles a LoDTensor as eval('data', {'data': array}); this returns the array, evaluating nothing."""
    if expression != "data" or not isinstance(namespace, dict) or not isinstance(namespace.get("data"), np.ndarray):
        raise pickle.UnpicklingError("unexpected paddle tensor record")
    return namespace["data"]


def _identity(value: Any, *_type_tag: Any) -> Any:
    """torch.jit._pickle list builders and type tags: the value itself is all a weights reader needs."""
    return value


_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_NUMPY_SCALAR = np.float32(0).__reduce__()[0]
_NUMPY_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]

_ALLOWED_GLOBALS: Dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.jit._pickle.build_intlist": _identity,
    "torch.jit._pickle.build_doublelist": _identity,
    "torch.jit._pickle.build_boollist": _identity,
    "torch.jit._pickle.build_tensorlist": _identity,
    "torch.jit._pickle.restore_type_tag": _identity,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "numpy.core.multiarray._reconstruct": _NUMPY_RECONSTRUCT,
    "numpy._core.multiarray._reconstruct": _NUMPY_RECONSTRUCT,
    "numpy.core.multiarray.scalar": _NUMPY_SCALAR,
    "numpy._core.multiarray.scalar": _NUMPY_SCALAR,
    "numpy.core.numeric._frombuffer": _NUMPY_FROMBUFFER,
    "numpy._core.numeric._frombuffer": _NUMPY_FROMBUFFER,
    "_codecs.encode": _latin1_encode,
    "builtins.tuple": tuple,  # paddle.save pickles a Tensor as tuple((name, array))
    "builtins.eval": _paddle_lod_tensor,  # never Python's eval: see _paddle_lod_tensor
}


def _allowed_global(module: str, name: str, path: PathLike) -> Any:
    """What a pickle may name: checkpoint building blocks only, so loading a file can never run code."""
    full = f"{module}.{name}"
    if full in _ALLOWED_GLOBALS:
        return _ALLOWED_GLOBALS[full]
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(STORAGE_DTYPES[name])
    if module == "__torch__" or module.startswith("__torch__."):
        return ScriptObject
    if module == "torch" or module.startswith("torch."):
        raise LipSyncError(f"{path} stores {full}, a kind of tensor lipsync cannot read; save plain float tensors instead")
    raise LipSyncError(
        f"lipsync refuses to load {path}: it asks for {full}, which a weights file never needs "
        "(the file may be malicious; use weights from a source you trust)"
    )


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only checkpoint objects and records which storages tensors use."""

    def __init__(self, file: IO[bytes], path: PathLike, *, storages: bool = False) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._storages = storages
        self.storage_dtypes: Dict[str, str] = {}

    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name, self._path)

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not self._storages:
            raise pickle.UnpicklingError("a persistent id outside a torch file")
        ref = _storage_ref(pid)
        self.storage_dtypes[ref.key] = ref.dtype
        return ref


def _storage_ref(pid: Any) -> _StorageRef:
    """('storage', type, key, location, numel[, view]) → a storage reference."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError("a storage of unknown type")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
        return _StorageRef(str(key), storage_type.dtype, int(numel))
    _view_key, offset, view_numel = view
    return _StorageRef(str(key), storage_type.dtype, int(view_numel), int(offset))


def read_pickled(path: Path, select: Select) -> Dict[str, np.ndarray]:
    """The arrays of a torch (zip, legacy, TorchScript) or pickled (paddle .pdparams) file, told apart by content.

    `select` picks the name → tensor mapping out of what the file holds; reading errors are DAMAGE_ERRORS.
    """
    with path.open("rb") as file:
        head = file.read(len(ZIP_SIGNATURES[0]))
        if head in ZIP_SIGNATURES:
            return _read_zip(path, select)
        if head[0] != PICKLE_PROTO:
            raise LipSyncError(f"{path} is not a weights file: it is neither a torch .pth nor a paddle .pdparams")
        file.seek(0)
        first = _SafeUnpickler(file, path).load()
        if isinstance(first, int) and first == TORCH_LEGACY_MAGIC:
            return _read_legacy(path, file, select)
        return _materialise(select(first), _no_storages, path)


def _read_zip(path: Path, select: Select) -> Dict[str, np.ndarray]:
    """torch >= 1.6 (and TorchScript): <dir>/data.pkl names storages kept as <dir>/data/<key>."""
    with zipfile.ZipFile(path) as archive:
        prefix = _zip_prefix(archive, path)
        byteorder = _zip_byteorder(archive, prefix)
        root = _SafeUnpickler(io.BytesIO(archive.read(prefix + ZIP_PICKLE)), path, storages=True).load()

        def fetch(key: str) -> bytes:
            return archive.read(f"{prefix}data/{key}")

        return _materialise(select(root), fetch, path, byteorder)


def _zip_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == ZIP_PICKLE:
            return parts[0] + "/"
    raise LipSyncError(f"{path} is a zip file but not a torch checkpoint (it has no {ZIP_PICKLE})")


def _zip_byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    try:
        return ">" if archive.read(prefix + "byteorder").strip() == b"big" else "<"
    except KeyError:  # written before torch recorded it: little-endian
        return "<"


def _read_legacy(path: Path, file: IO[bytes], select: Select) -> Dict[str, np.ndarray]:
    """torch < 1.6: magic, protocol, sys_info, the object, its storage keys, then each storage's bytes."""
    protocol = _SafeUnpickler(file, path).load()
    if protocol != TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"unknown torch file protocol {protocol!r}")
    sys_info = _SafeUnpickler(file, path).load()
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    unpickler = _SafeUnpickler(file, path, storages=True)
    root = unpickler.load()
    keys = _SafeUnpickler(file, path).load()
    offsets = _legacy_storage_offsets(file, keys, unpickler.storage_dtypes)

    def fetch(key: str) -> bytes:
        start, nbytes = offsets[key]
        file.seek(start)
        return file.read(nbytes)

    return _materialise(select(root), fetch, path, byteorder)


def _legacy_storage_offsets(file: IO[bytes], keys: Any, dtypes: Mapping[str, str]) -> Dict[str, Tuple[int, int]]:
    """Where each storage's bytes start and how many there are, found by skipping from one to the next."""
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("no storage list after the object")
    position = file.tell()
    end = file.seek(0, io.SEEK_END)
    file.seek(position)
    offsets = {}
    for key in keys:
        (numel,) = LEGACY_NUMEL.unpack(_read_exact(file, LEGACY_NUMEL.size))
        start = file.tell()
        nbytes = numel * _itemsize(dtypes[str(key)])
        if numel < 0 or start + nbytes > end:
            raise EOFError(f"storage {key} runs past the end of the file (truncated?)")
        offsets[str(key)] = (start, nbytes)
        file.seek(start + nbytes)
    return offsets


def _read_exact(file: IO[bytes], size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise EOFError("the file ends early (truncated?)")
    return data


def _no_storages(key: str) -> bytes:
    raise pickle.UnpicklingError("a tensor outside a torch file")


def _materialise(
    weights: Mapping[str, Any], fetch: Callable[[str], bytes], path: PathLike, byteorder: str = "<"
) -> Dict[str, np.ndarray]:
    """Turn tensor references into arrays, reading each storage once and dropping it after its last use."""
    uses = collections.Counter(v.storage.key for v in weights.values() if isinstance(v, TensorRef))
    storages: Dict[str, np.ndarray] = {}
    out = {}
    for name, value in weights.items():
        if isinstance(value, TensorRef):
            key = value.storage.key
            if key not in storages:
                storages[key] = _storage_array(fetch(key), value.storage.dtype, byteorder)
            out[name] = _tensor_from(storages[key], value, path)
            uses[key] -= 1
            if not uses[key]:
                del storages[key]
        else:
            out[name] = _checked_array(value, name, path)
    return out


def _raw_dtype(dtype: str, byteorder: str = "<") -> np.dtype:
    raw = np.dtype(np.uint16 if dtype == BFLOAT16 else dtype)
    return raw.newbyteorder(byteorder) if raw.itemsize > 1 else raw


def _itemsize(dtype: str) -> int:
    return _raw_dtype(dtype).itemsize


def _storage_array(data: bytes, dtype: str, byteorder: str) -> np.ndarray:
    raw = _raw_dtype(dtype, byteorder)
    return np.frombuffer(data, dtype=raw, count=len(data) // raw.itemsize)


def _tensor_from(storage: np.ndarray, ref: TensorRef, path: PathLike) -> np.ndarray:
    """Copy a tensor out of its storage by offset, size and stride (views into shared storages included)."""
    base = storage[ref.storage.offset : ref.storage.offset + ref.storage.numel]
    size, stride = ref.size, ref.stride
    if len(size) != len(stride) or min(size + stride, default=0) < 0 or ref.offset < 0:
        raise LipSyncError(f"{path} is damaged: a tensor has an impossible shape {size} / stride {stride}")
    if 0 in size:
        return _widened(np.zeros(size, dtype=base.dtype), ref.storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.size:
        raise LipSyncError(f"{path} is damaged or truncated: a tensor runs past the end of its data")
    strides = tuple(s * base.itemsize for s in stride)
    view = np.lib.stride_tricks.as_strided(base[ref.offset :], shape=size, strides=strides, writeable=False)
    return _widened(np.array(view), ref.storage.dtype)


def _widened(array: np.ndarray, dtype: str) -> np.ndarray:
    """Native byte order, and bfloat16 bits made float32."""
    if dtype == BFLOAT16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _checked_array(value: np.ndarray, name: str, path: PathLike) -> np.ndarray:
    if value.dtype.kind not in "biuf":
        raise LipSyncError(f"{path} is not a weights file: {name} holds {value.dtype} data, not numbers")
    return value
