"""lipsync: make the face in a picture or video speak any audio, with Wav2Lip on PaddlePaddle.

    import lipsync
    lipsync.run("face.jpg", "speech.wav", "/tmp/out.mp4", lipsync.LipSyncOptions(checkpoint="wav2lip_gan"))

Heavy modules (paddle) load on first use, so `import lipsync` stays cheap.
"""

from __future__ import annotations

import os
import warnings
import zlib  # noqa: F401  (before paddle: see below)
from typing import TYPE_CHECKING, Any

# paddle 2.6.2's libpaddle.so carries its own zlib and exports its symbols process-wide. A system libz.so.1
# loaded after it (by Python's zlib module, which numpy.random imports) resolves its internal calls to
# paddle's copy, and the next decompression fails ("zlib.error: Error -2 … inconsistent stream state") or
# corrupts the heap ("double free or corruption"). Importing zlib above loads the system libz first, so each
# library keeps its own. This only helps when lipsync is imported before paddle.

os.environ.setdefault("GLOG_minloglevel", "2")  # paddle's C++ info lines would drown our one-line errors
# paddle 3.x warns at import when ccache (a C++ build cache for custom operators, which we never build) is missing
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from .errors import LipSyncError
from .options import LipSyncOptions

__version__ = "0.1.0"
__all__ = ["LipSyncError", "LipSyncOptions", "run", "RunResult", "Engine", "DEFAULT_ENGINE", "load_wav2lip",
           "available_models", "find_faces", "FoundFace"]

_LAZY = {
    "run": "pipeline",
    "RunResult": "pipeline",
    "Engine": "engine",
    "DEFAULT_ENGINE": "engine",  # the one run() uses unless given another
    "load_wav2lip": "weights",
    "available_models": "weights",
    "find_faces": "picker",
    "FoundFace": "picker",
}

if TYPE_CHECKING:
    from .engine import DEFAULT_ENGINE, Engine
    from .picker import FoundFace, find_faces
    from .pipeline import RunResult, run
    from .weights import available_models, load_wav2lip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lipsync' has no attribute {name!r}")
