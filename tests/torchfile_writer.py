"""Test helper: write real PyTorch checkpoint files (zip and legacy formats) from numpy arrays, without torch.

The pickles are what torch.save writes (checked byte for byte against files torch wrote, in
tests/test_checkpoint.py); tensor bytes are streamed straight from numpy, so a full-size Wav2Lip
(~36M parameters) is written in well under a second.

    save_torch(training_checkpoint(torch_names(layer_state)), path)            # zip, torch >= 1.6
    save_torch(training_checkpoint(torch_names(layer_state)), path, legacy=True)  # torch < 1.6
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

PROTOCOL = 2  # torch.save's default pickle protocol
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
LEGACY_SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
ZIP_ALIGNMENT = 64  # torch aligns each storage's bytes in the zip to this many bytes
ZIP_LOCAL_HEADER = 30  # bytes of a zip local file header before its name
ZIP_VERSION = b"3\n"
SERIALIZATION_ID = b"0" * 40

STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class Global:
    """A module-level name as a pickle GLOBAL opcode names it (torch need not be importable)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle insists a reduce function be callable
        raise TypeError(f"{self.module}.{self.name} is only a name to write into a pickle")


_GLOBALS: Dict[Tuple[str, str], Global] = {}


def global_ref(module: str, name: str) -> Global:
    """One Global per name, so the pickle memoises repeats as torch's does."""
    return _GLOBALS.setdefault((module, name), Global(module, name))


class Storage:
    """A torch storage: flat data that tensors view; `key` names it in the file (None: assigned on save).

    `type_name` overrides the storage class (e.g. "BFloat16Storage" for uint16 bit patterns).
    """

    def __init__(self, data: np.ndarray, key: Optional[str] = None, type_name: Optional[str] = None) -> None:
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.key = key
        self.type_name = type_name or STORAGE_NAMES[self.data.dtype]


class Tensor:
    """A tensor as torch pickles it: a strided window into a storage."""

    def __init__(self, storage: Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    @classmethod
    def of(cls, array: np.ndarray) -> "Tensor":
        """A tensor owning a contiguous copy of `array`."""
        array = np.asarray(array)
        return cls(Storage(array), 0, array.shape, _contiguous_strides(array.shape))

    def __reduce__(self) -> Tuple[Any, ...]:
        hooks = collections.OrderedDict()
        size, stride = tuple([*self.size]), tuple([*self.stride])  # fresh tuples: torch never shares them in a pickle
        args = (self.storage, self.offset, size, stride, False, hooks)
        return global_ref("torch._utils", "_rebuild_tensor_v2"), args


class ScriptModule:
    """A TorchScript module object as torch.jit.save pickles it: its class, then its attributes (BUILD)."""

    def __init__(self, qualified_name: str, attributes: Mapping[str, Any]) -> None:
        self.qualified_name, self.attributes = qualified_name, dict(attributes)


def _contiguous_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler: it lets us emit GLOBALs for names we lack
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file: Any, *, legacy: bool) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.legacy = legacy
        self.storages: Dict[str, Storage] = {}

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, Storage):
            return None
        if obj.key is None:
            obj.key = str(len(self.storages))
        self.storages.setdefault(obj.key, obj)
        storage_type = global_ref("torch", obj.type_name)
        if self.legacy:  # torch < 1.6 formats the key anew for each tensor, so the pickle repeats it
            return ("storage", storage_type, obj.key.encode().decode(), "cpu", obj.data.size, None)
        return ("storage", storage_type, obj.key, "cpu", obj.data.size)

    def _save_global_ref(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    def _save_ndarray(self, obj: np.ndarray) -> None:
        self.save(Tensor.of(obj))

    def _save_script_module(self, obj: ScriptModule) -> None:
        module, _, name = obj.qualified_name.rpartition(".")
        self.save(global_ref(module, name))
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.attributes)
        self.write(pickle.BUILD)

    dispatch[Global] = _save_global_ref
    dispatch[np.ndarray] = _save_ndarray
    dispatch[ScriptModule] = _save_script_module


def pickle_torch(obj: Any, *, legacy: bool = False) -> Tuple[bytes, Dict[str, Storage]]:
    """The object pickle torch.save writes for `obj` (ndarrays become tensors), and the storages it names."""
    buffer = io.BytesIO()
    pickler = _TorchPickler(buffer, legacy=legacy)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def save_torch(obj: Any, path: Union[str, Path], *, legacy: bool = False, archive_name: Optional[str] = None) -> None:
    """Write `obj` (dicts/lists of ndarrays, Tensors, numbers) as torch.save would: zip format, or legacy."""
    data_pkl, storages = pickle_torch(obj, legacy=legacy)
    if legacy:
        _write_legacy(Path(path), data_pkl, storages)
    else:
        _write_zip(Path(path), data_pkl, storages, archive_name or Path(path).stem)


def _write_legacy(path: Path, data_pkl: bytes, storages: Mapping[str, Storage]) -> None:
    keys = sorted(storages)
    with path.open("wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, LEGACY_SYS_INFO):
            pickle.dump(header, f, protocol=PROTOCOL)
        f.write(data_pkl)
        pickle.dump(keys, f, protocol=PROTOCOL)
        for key in keys:
            data = storages[key].data
            f.write(struct.pack("<q", data.size))
            f.write(_bytes_view(data))


def _write_zip(path: Path, data_pkl: bytes, storages: Mapping[str, Storage], archive: str) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        _add_entry(zf, f"{archive}/data.pkl", data_pkl)
        _add_entry(zf, f"{archive}/.format_version", b"1")
        _add_entry(zf, f"{archive}/.storage_alignment", str(ZIP_ALIGNMENT).encode())
        _add_entry(zf, f"{archive}/byteorder", b"little")
        for key in sorted(storages):
            _add_entry(zf, f"{archive}/data/{key}", _bytes_view(storages[key].data))
        _add_entry(zf, f"{archive}/version", ZIP_VERSION)
        _add_entry(zf, f"{archive}/.data/serialization_id", SERIALIZATION_ID)


def _add_entry(zf: zipfile.ZipFile, name: str, data: Any) -> None:
    """Store one entry uncompressed, its bytes aligned as torch aligns them (padding in the extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(data)
    start = zf.fp.tell() + ZIP_LOCAL_HEADER + len(name.encode()) + 4
    pad = -start % ZIP_ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w") as out:
        out.write(data)


def _bytes_view(data: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))


def torch_names(state: Mapping[str, Any]) -> "collections.OrderedDict[str, np.ndarray]":
    """A paddle state (names → arrays or tensors) under torch's names, with BatchNorm's num_batches_tracked."""
    out: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
    for name, value in state.items():
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if name.endswith("._mean"):
            out[name[: -len("._mean")] + ".running_mean"] = array
        elif name.endswith("._variance"):
            base = name[: -len("._variance")]
            out[base + ".running_var"] = array
            out[base + ".num_batches_tracked"] = np.array(1000, dtype=np.int64)
        else:
            out[name] = array
    return out


def training_checkpoint(state: Mapping[str, np.ndarray], *, prefix: str = "module.", step: int = 123) -> Dict[str, Any]:
    """Wrap a torch-named state like Rudrabha's training checkpoints: DataParallel prefix and optimizer junk."""
    first = next(iter(state.values()))
    optimizer = {
        "state": {0: {"step": 10, "exp_avg": np.ones_like(first), "exp_avg_sq": np.full_like(first, 2)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": list(range(len(state)))}],
    }
    wrapped = collections.OrderedDict((prefix + name, value) for name, value in state.items())
    modules = sorted({prefix.rstrip(".")} | {(prefix + name).rsplit(".", 1)[0] for name in state})
    wrapped._metadata = collections.OrderedDict((m, {"version": 1}) for m in modules)  # as module.state_dict() has
    return {"state_dict": wrapped, "optimizer": optimizer, "global_step": step, "global_epoch": 4}
