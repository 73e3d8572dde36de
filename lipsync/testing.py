"""Random weights of the real architectures, for tests and benchmarks; never used by a run.

    state = random_wav2lip_state(seed=7)                     # a Wav2Lip generator that makes noise
    state = planted_s3fd_state(seed=11)                      # S3FD calling every anchor a face
    state = planted_s3fd_state(seed=7, head="conv6_2")       # ... only the stride-64 head's, as boxes
    s3fd = save_random_weights(models_dir)                   # wav2lip_hq.pdparams + planted_s3fd.pdparams
    save_random_gpen(path, size=64)                          # a small GPEN (the network size is read back)

The S3FD classifier heads are "planted" (their weights zeroed, their biases set) so detection is
deterministic whatever the random backbone does: random weights cannot find a real face.
Saved files are never called s3fd.pth: that name has a published sha256, which random weights fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from .model import Wav2Lip

WAV2LIP_SEED = 7
S3FD_SEED = 11
GPEN_SEED = 13
SMALL_GPEN = 64  # px: the cheapest GPEN whose layout is the published one's, less the top levels
WAV2LIP_FILENAME = "wav2lip_hq.pdparams"  # the default generator's name, found through $LIPSYNC_MODELS
PLANTED_S3FD_FILENAME = "planted_s3fd.pdparams"
PLANTED_LOGIT = 8.0  # face vs background logit in the planted heads
# With a chosen head, its box offsets: centre +64 px, size 256 * exp(-3.47 * 0.2) = 128 px at the stride-64 head.
PLANTED_LOC: Tuple[float, ...] = (2.5, 2.5, -3.47, -3.47)
MBOX = "_mbox_"  # S3FD's head layers: <source>_mbox_conf (face/background logits), <source>_mbox_loc (box offsets)

StateWriter = Callable[[Dict[str, np.ndarray], Path], None]


def random_wav2lip_state(seed: int = WAV2LIP_SEED) -> Dict[str, np.ndarray]:
    """A randomly initialised Wav2Lip generator's parameters by paddle name."""
    return {name: value.numpy() for name, value in _random_wav2lip(seed).state_dict().items()}


def planted_s3fd_state(seed: int = S3FD_SEED, head: Optional[str] = None,
                       loc: Tuple[float, ...] = PLANTED_LOC) -> Dict[str, np.ndarray]:  # fmt: skip
    """A random S3FD whose heads are planted: with `head` None every anchor of every head is a face (at the
    anchor's own box); with a head's source name (e.g. "conv6_2") only that head's anchors are faces, moved and
    sized by `loc` (S3FD's box offsets: centre x, y, then log size w, h), and every other head finds none."""
    import paddle

    from .s3fd import S3FD

    paddle.seed(seed)
    state = {name: value.numpy() for name, value in S3FD().state_dict().items()}
    for name, value in state.items():
        if MBOX in name:
            _plant(name, value, chosen=head is None or name.startswith(f"{head}{MBOX}"), loc=loc if head else None)
    return state


def _plant(name: str, value: np.ndarray, chosen: bool, loc: Optional[Tuple[float, ...]]) -> None:
    """Zero one head layer; its biases say face (chosen) or background, and, with `loc`, where the box goes."""
    value[...] = 0.0
    if not name.endswith(".bias"):
        return
    if "_mbox_conf" in name:
        value[:] = -PLANTED_LOGIT if chosen else PLANTED_LOGIT
        value[-1] = PLANTED_LOGIT if chosen else -PLANTED_LOGIT  # the last class channel is "face"
    elif chosen and loc is not None:
        value[:] = loc


def save_random_weights(models_dir: Path, *, seed: int = WAV2LIP_SEED, s3fd_path: Optional[Path] = None,
                        s3fd_seed: int = S3FD_SEED, head: Optional[str] = None, loc: Tuple[float, ...] = PLANTED_LOC,
                        write_s3fd: Optional[StateWriter] = None) -> Path:  # fmt: skip
    """A random Wav2Lip as `models_dir`/wav2lip_hq.pdparams and a planted S3FD at `s3fd_path` (default
    `models_dir`/planted_s3fd.pdparams, written by paddle.save unless `write_s3fd` is given); returns the S3FD path."""
    import paddle

    models_dir.mkdir(parents=True, exist_ok=True)
    paddle.save(_random_wav2lip(seed).state_dict(), str(models_dir / WAV2LIP_FILENAME))
    path = s3fd_path or models_dir / PLANTED_S3FD_FILENAME
    state = planted_s3fd_state(s3fd_seed, head, loc)
    (write_s3fd or _save_s3fd_pdparams)(state, path)
    return path


def _random_wav2lip(seed: int) -> "Wav2Lip":
    """A new generator with random weights (paddle loads only when this runs)."""
    import paddle

    from .model import Wav2Lip

    paddle.seed(seed)
    return Wav2Lip()


def _save_s3fd_pdparams(state: Dict[str, np.ndarray], path: Path) -> None:
    """As paddle.save writes a Layer's state_dict (parameter records and name table), like PaddleGAN's file."""
    import paddle

    from .s3fd import S3FD

    detector = S3FD()
    detector.set_state_dict(state)
    paddle.save(detector.state_dict(), str(path))


def save_random_gpen(path: Path, size: int = SMALL_GPEN, seed: int = GPEN_SEED) -> Path:
    """A randomly initialised GPEN of this side, saved by paddle.save as PaddleGAN's GPEN-512.pdparams is."""
    import paddle

    from .enhance import GPEN

    paddle.seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(GPEN(size).state_dict(), str(path))
    return path
