"""Domain type aliases shared by the stages, so signatures read as what they carry."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

Frame = np.ndarray
"""One video frame: H×W×3 uint8, BGR channel order (what Wav2Lip was trained on)."""

Box = Tuple[int, int, int, int]
"""A face box in frame pixels: (x1, y1, x2, y2), x2/y2 exclusive."""

MelWindow = np.ndarray
"""One generator audio input: (80, 16) float32 mel columns."""

Progress = Callable[[str, int, int], None]
"""Progress callback: (stage, done, total)."""

# The stages a run reports through Progress, in order (the app's text-to-speech comes first).
STAGE_SPEECH = "speech"
STAGE_AUDIO = "reading audio"
STAGE_LOAD = "loading the model"
STAGE_FACES = "detecting faces"
STAGE_SYNC = "lip-syncing"
STAGE_ENHANCE = "enhancing faces"  # only with face enhancement on; reported after each batch's lip-syncing
STAGE_ENCODE = "encoding"
STAGES = (STAGE_SPEECH, STAGE_AUDIO, STAGE_LOAD, STAGE_FACES, STAGE_SYNC, STAGE_ENHANCE, STAGE_ENCODE)
