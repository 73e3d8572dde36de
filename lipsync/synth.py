"""The generator's work on one batch of frames: its inputs, the mouths it draws, GPEN on the redrawn faces."""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from . import facecrop, mouth, runtime
from .engine import Enhancer, StillGenerator
from .mouth import FACE_SIZE
from .types import Box, Frame


def batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def face_inputs(frames: List[Frame], boxes: List[Tuple[int, ...]]) -> np.ndarray:
    """Generator face input for each frame's box (x1, y1, x2, y2), cut and scaled to 96 px."""
    crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE)) for f, (x1, y1, x2, y2) in zip(frames, boxes)])
    return mouth.face_input(crops)


def face_enhancer(enhancer: Optional[Enhancer]) -> Optional[Callable[[List[Frame], list], None]]:
    """(frames, boxes) -> None, enhancing each frame's redrawn lower face in place; None when off."""
    if enhancer is None:
        return None
    runner = runtime.BatchRunner(enhancer.predictor.run, enhancer.batch)  # per run: out-of-memory halves it
    return lambda frames, boxes: facecrop.enhance_frames(frames, boxes, enhancer.size,
                                                         lambda faces: generate(runner, faces))  # fmt: skip


def mouth_generator(generator: Union[runtime.Predictor, StillGenerator], batch: int,
                     first: Tuple[Frame, Tuple[int, ...]]) -> Callable[[np.ndarray, List[Frame], list], np.ndarray]:
    """(mels, frames, boxes) → generator output; a still face is encoded once, from the first frame."""
    if isinstance(generator, StillGenerator):
        features = generator.encoder.run(face_inputs([first[0]], [first[1]]))
        still = runtime.BatchRunner(lambda mels: generator.decoder.run(mels, *features), batch)
        pad = _pads_short_batches(generator.decoder)
        return lambda mels, frames, boxes: generate(still, mels, pad=pad)
    runner = runtime.BatchRunner(generator.run, batch)
    pad = _pads_short_batches(generator)
    return lambda mels, frames, boxes: generate(runner, mels, face_inputs(frames, boxes), pad=pad)


def _pads_short_batches(predictor: runtime.Predictor) -> bool:
    return predictor.device.kind != "cpu"


def generate(runner: runtime.BatchRunner, *inputs: np.ndarray, pad: bool = True) -> np.ndarray:
    """Generator output for one batch. A short batch (the last, or the frames with a face) is either padded
    to the full one (pad=True: a GPU, where each input shape costs cuDNN set-up time and memory that a
    long-lived app keeps, and padding is nearly free) or run in power-of-two pieces, 7 frames as 4 + 2 + 1
    (pad=False: a CPU, which would spend as long on each padded frame as on a real one; the few shapes
    this makes stay within oneDNN's shape cache, runtime.MKLDNN_SHAPE_CACHE)."""
    count = len(inputs[0])
    size = runner.batch
    if size <= count:
        return runner(*inputs)[0]
    if pad:
        inputs = tuple(np.concatenate([a, np.repeat(a[-1:], size - count, axis=0)]) for a in inputs)
        return runner(*inputs)[0][:count]
    parts, start = [], 0
    for piece in power_of_two_pieces(count):
        parts.append(runner(*(a[start : start + piece] for a in inputs))[0])
        start += piece
    return np.concatenate(parts)


def power_of_two_pieces(count: int) -> List[int]:
    """count as a sum of distinct powers of two, largest first: 13 → [8, 4, 1]."""
    return [1 << bit for bit in reversed(range(count.bit_length())) if count >> bit & 1]


def chain_first(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def sync_chunk(frames: List[Frame], boxes: List[Optional[Box]], mels: np.ndarray,
               generate: Callable[[np.ndarray, List[Frame], list], np.ndarray],
               paste: Callable[[Frame, Box, np.ndarray], Frame]) -> Tuple[List[Frame], List[int]]:  # fmt: skip
    """A chunk's frames with new mouths where the face is (each with its own mel window); frames without the
    face as they came. Also the positions of the frames redrawn."""
    live = [i for i, box in enumerate(boxes) if box is not None]
    out = list(frames)
    if not live:
        return out, live
    drawn = mouth.to_faces(generate(mels[live], [frames[i] for i in live], [boxes[i] for i in live]))
    for i, pixels in zip(live, drawn):
        out[i] = paste(frames[i], boxes[i], pixels)  # type: ignore[arg-type]
    return out, live
