"""The generator's face input and its output as pixels: shared by a run and the precision gate."""

from __future__ import annotations

import numpy as np

FACE_SIZE = 96  # generator input/output side, px
PIXEL_LEVELS = 255.0


def face_input(crops: np.ndarray) -> np.ndarray:
    """B×96×96×3 uint8 face crops → the generator's [lower-half-masked crop, crop] on channels, /255, NCHW float32."""
    masked = crops.copy()
    masked[:, FACE_SIZE // 2 :] = 0
    stacked = np.concatenate([masked, crops], axis=3).astype(np.float32) / PIXEL_LEVELS
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def to_pixels(predicted: np.ndarray) -> np.ndarray:
    """Generator output [B,3,H,96] in [0,1] → B×H×96×3 uint8 BGR, truncated like the reference."""
    return (predicted.transpose(0, 2, 3, 1) * PIXEL_LEVELS).astype(np.uint8)


def to_faces(predicted: np.ndarray) -> np.ndarray:
    """Generator output → B×96×96×3 uint8 BGR faces. A generator that drew only the lower rows (the ones the
    paste reads) gets its top rows filled with copies of its first row, which the paste gives no weight."""
    pixels = to_pixels(predicted)
    missing = FACE_SIZE - pixels.shape[1]
    if missing <= 0:
        return pixels
    return np.pad(pixels, ((0, 0), (missing, 0), (0, 0), (0, 0)), mode="edge")
