"""Weights as a name → array mapping: read from any weights file, then loaded strictly into paddle Layers.

lipsync.torchfile parses the file (safely, without torch); this module unwraps what a checkpoint holds
around its weights (training wrappers, DataParallel prefixes, paddle.save's tables), maps torch names to
paddle's, and sets every parameter of a Layer or none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .errors import LipSyncError
from .torchfile import DAMAGE_ERRORS, PathLike, ScriptObject, TensorRef, read_pickled

# What a checkpoint holds around its weights.
WRAPPER_KEYS = ("state_dict", "netG")  # Rudrabha's training checkpoints; PaddleGAN trainer weight files
DATA_PARALLEL_PREFIX = "module."
PADDLE_NAME_TABLE = "StructuredToParameterName@@"  # paddle.save's structured-name → parameter-name table
PADDLE_BIG_PARAMS = "UnpackBigParamInfor@@"  # paddle.save (protocol 2/3) splits arrays over 1 GiB into slices

# Torch → paddle names: BatchNorm statistics are named differently; torch's batch counter has no twin.
TORCH_TO_PADDLE_SUFFIXES = ((".running_mean", "._mean"), (".running_var", "._variance"))
TORCH_ONLY_SUFFIXES = (".num_batches_tracked",)
MAX_LISTED_KEYS = 3  # names shown per category in a mismatch error (which is one line)


def read_state_dict(path: PathLike) -> Dict[str, np.ndarray]:
    """The weights in a torch (zip, legacy, TorchScript) or paddle (.pdparams) file, as numpy arrays by name.

    The format is told by content, not extension. A training checkpoint's `state_dict` is unwrapped
    (optimizer and counters are ignored) and DataParallel's `module.` prefix is stripped. Names stay
    as the file has them; `assign_state_dict` maps torch names to paddle's.
    """
    path = Path(path)
    _check_readable(path)
    try:
        return read_pickled(path, lambda root: _weights_in(root, path))
    except LipSyncError:
        raise
    except DAMAGE_ERRORS as exc:
        raise LipSyncError(
            f"{path} is damaged or is not a weights file (a torch .pth or paddle .pdparams): {exc or type(exc).__name__}. "
            "If it was downloaded, delete it and download it again."
        ) from exc


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise LipSyncError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise LipSyncError(f"cannot read weights file {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise LipSyncError(f"{path} is not a file; give the path of a weights file (.pth or .pdparams)")
    if size == 0:
        raise LipSyncError(f"{path} is empty, so it is not a weights file (an interrupted download?)")


def _weights_in(root: Any, path: PathLike) -> Dict[str, Any]:
    """The name → tensor mapping inside whatever the file holds, with wrappers and paddle metadata removed."""
    if isinstance(root, ScriptObject):
        return dict(_script_tensors(root, ""))
    if not isinstance(root, Mapping):
        raise LipSyncError(f"{path} holds a {type(root).__name__}, not a dict of weights")
    for key in WRAPPER_KEYS:
        if isinstance(root.get(key), Mapping):
            root = root[key]
            break
    weights = _join_paddle_slices(root)
    tensors = {}
    for name, value in weights.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # paddle.save's (parameter name, array) record of a Tensor
        if isinstance(name, str) and isinstance(value, (np.ndarray, TensorRef)):
            tensors[_strip_prefix(name)] = value
    if not tensors:
        raise LipSyncError(f"{path} holds no weights (no tensors found in it)")
    return tensors


def _script_tensors(obj: ScriptObject, prefix: str) -> Iterator[Tuple[str, TensorRef]]:
    """A TorchScript module's tensors by dotted attribute path: the names its state_dict() has."""
    for name, value in obj.attributes.items():
        if isinstance(value, TensorRef):
            yield prefix + name, value
        elif isinstance(value, ScriptObject):
            yield from _script_tensors(value, f"{prefix}{name}.")


def _join_paddle_slices(weights: Mapping[Any, Any]) -> Dict[Any, Any]:
    """Undo paddle.save's splitting of huge arrays, and drop its name table."""
    joined = {k: v for k, v in weights.items() if k not in (PADDLE_NAME_TABLE, PADDLE_BIG_PARAMS)}
    for name, info in dict(weights.get(PADDLE_BIG_PARAMS) or {}).items():
        parts = [np.asarray(joined.pop(part)).reshape(-1) for part in info["slices"]]
        joined[name] = np.concatenate(parts).reshape(info["OriginShape"])
    return joined


def _strip_prefix(name: str) -> str:
    return name[len(DATA_PARALLEL_PREFIX) :] if name.startswith(DATA_PARALLEL_PREFIX) else name


def to_paddle_names(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Torch BatchNorm names → paddle's (running_mean → _mean, running_var → _variance); torch-only counters dropped."""
    renamed = {}
    for name, value in state.items():
        if name.endswith(TORCH_ONLY_SUFFIXES):
            continue
        for torch_suffix, paddle_suffix in TORCH_TO_PADDLE_SUFFIXES:
            if name.endswith(torch_suffix):
                name = name[: -len(torch_suffix)] + paddle_suffix
                break
        renamed[name] = value
    return renamed


def assign_state_dict(layer: Any, state: Mapping[str, np.ndarray], *, source: str, hint: Optional[str] = None) -> None:
    """Set every parameter and buffer of a paddle Layer from `state`, or raise without changing anything.

    Strict: a missing, unexpected or wrongly shaped name is an error listing them, never a partial
    load. Values are cast to each parameter's dtype. `hint` ends the error (what the file might be).
    """
    targets = layer.state_dict()
    given = to_paddle_names(state)
    missing = [name for name in targets if name not in given]
    unexpected = [name for name in given if name not in targets]
    wrong_shape = [
        f"{name} (file {list(given[name].shape)}, model {list(tensor.shape)})"
        for name, tensor in targets.items()
        if name in given and tuple(given[name].shape) != tuple(tensor.shape)
    ]
    if missing or unexpected or wrong_shape:
        model = type(layer).__name__
        raise LipSyncError(_mismatch_message(source, model, missing, unexpected, wrong_shape, hint))
    for name, tensor in targets.items():
        tensor.set_value(np.ascontiguousarray(given[name], dtype=_numpy_dtype(tensor)))


def _numpy_dtype(tensor: Any) -> np.dtype:
    """paddle.float32 → float32, on paddle 2.x and 3.x alike."""
    return np.dtype(str(tensor.dtype).rsplit(".", 1)[-1])


def _mismatch_message(
    source: str, model: str, missing: List[str], unexpected: List[str], wrong_shape: List[str], hint: Optional[str]
) -> str:
    """One line (the CLI prints errors as one): each non-empty category with its count and first names."""
    parts = [
        f"{len(names)} {label} ({_first_names(names)})"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", wrong_shape))
        if names
    ]
    message = f"{source} does not match the {model} model: {', '.join(parts)}."
    return f"{message} {hint}" if hint else message


def _first_names(names: List[str]) -> str:
    """'a, b, c, … and 299 more' (at most MAX_LISTED_KEYS names)."""
    shown = ", ".join(names[:MAX_LISTED_KEYS])
    rest = len(names) - MAX_LISTED_KEYS
    return f"{shown}, … and {rest} more" if rest > 0 else shown
