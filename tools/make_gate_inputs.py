"""Writes lipsync/data/gate_inputs.npz: the fixed inputs the precision gate compares fp32 with bf16/fp16 on.

Four real faces (scikit-image's public-domain astronaut photo: the face, mirrored, shifted, darker), cut and
scaled to the generator's 96 px as a run cuts them, and four mel windows of espeak-ng speech. Run from the
repository root with the dev environment: `.venv/bin/python tools/make_gate_inputs.py`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lipsync import audio, faces  # noqa: E402
from lipsync.mouth import FACE_SIZE  # noqa: E402

TARGET = ROOT / "lipsync" / "data" / "gate_inputs.npz"
SPEECH = "Open wide, say ah, then smile."
FPS = 25.0
MEL_FRAMES = (6, 14, 22, 30)  # video frames whose mel windows are kept: inside the speech, not its silence
SHIFT_PX = 6  # the shifted face's offset, px at the photo's scale
DARKER = 0.75  # the darker face's brightness factor


def astronaut_faces() -> np.ndarray:
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    box = faces.HaarDetector()([photo])[0]
    assert box is not None, "Haar found no face in the astronaut photo"
    x1, y1, x2, y2 = box
    crops = [photo[y1:y2, x1:x2], photo[y1:y2, x1:x2][:, ::-1],
             photo[y1 + SHIFT_PX:y2 + SHIFT_PX, x1 + SHIFT_PX:x2 + SHIFT_PX],
             (photo[y1:y2, x1:x2] * DARKER).astype(np.uint8)]  # fmt: skip
    return np.stack([cv2.resize(np.ascontiguousarray(c), (FACE_SIZE, FACE_SIZE)) for c in crops])


def speech_mels() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), SPEECH], check=True, capture_output=True)
        mel = audio.melspectrogram(audio.load_audio(wav))
    return np.stack([audio.mel_batch(mel, i, i + 1, FPS)[0] for i in MEL_FRAMES]).astype(np.float32)


def main() -> None:
    np.savez_compressed(TARGET, faces=astronaut_faces(), mels=speech_mels())
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
