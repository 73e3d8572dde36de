"""lipsync: make the face in a picture or video speak any audio, with Wav2Lip on PaddlePaddle.

    import lipsync
    lipsync.run("face.jpg", "speech.wav", "/tmp/out.mp4", lipsync.LipSyncOptions(checkpoint="wav2lip_gan"))

Heavy modules (paddle) load on first use, so `import lipsync` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GLOG_minloglevel", "2")  # paddle's C++ info lines would drown our one-line errors

from .errors import LipSyncError
from .options import LipSyncOptions

__version__ = "0.1.0"
__all__ = ["LipSyncError", "LipSyncOptions", "run", "RunResult", "Engine", "load_wav2lip", "available_models"]

_LAZY = {
    "run": "pipeline",
    "RunResult": "pipeline",
    "Engine": "pipeline",
    "load_wav2lip": "weights",
    "available_models": "weights",
}

if TYPE_CHECKING:
    from .pipeline import Engine, RunResult, run
    from .weights import available_models, load_wav2lip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lipsync' has no attribute {name!r}")
