"""The generator's work on one batch of frames: its inputs, the mouths it draws, GPEN on the redrawn faces."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Deque, Iterator, List, Optional, Tuple, TypeVar, Union

import cv2
import numpy as np

from . import batching, facecrop, mouth, runtime
from .engine import Enhancer, StillGenerator
from .mouth import FACE_SIZE
from .types import Box, Frame

# Chunks drawn ahead of the one being pasted: enough that with two generator lanes (engine.GENERATOR_LANES)
# neither waits while a chunk is pasted and encoded; their frames are held meanwhile, at most AHEAD_BYTES.
CHUNKS_AHEAD = 2
AHEAD_BYTES = 256 * 2**20  # 2 chunks of 16 frames up to 1080p; 4K frames are drawn one chunk at a time
AHEAD_THREAD = "lipsync-draw"

T = TypeVar("T")


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
    runner = batching.BatchRunner(enhancer.predictor.run, enhancer.batch)  # per run: out-of-memory halves it
    return lambda frames, boxes: facecrop.enhance_frames(frames, boxes, enhancer.size,
                                                         lambda faces: generate(runner, faces))  # fmt: skip


def mouth_generator(generator: Union[runtime.Predictor, StillGenerator], batch: int,
                     first: Tuple[Frame, Tuple[int, ...]],
                     single_job: bool = False) -> Callable[[np.ndarray, List[Frame], list], np.ndarray]:  # fmt: skip
    """(mels, frames, boxes) → generator output; a still face is encoded once, from the first frame. A short batch
    is padded on a GPU, and on a CPU in a `single_job` (engine.Engine.single_job); otherwise run in pieces."""
    if isinstance(generator, StillGenerator):
        features = generator.encoder.run(face_inputs([first[0]], [first[1]]))
        still = batching.BatchRunner(lambda mels: generator.decoder.run(mels, *features), batch)
        pad = _pads_short_batches(generator.decoder, single_job)
        return lambda mels, frames, boxes: generate(still, mels, pad=pad)
    runner = batching.BatchRunner(generator.run, batch)
    pad = _pads_short_batches(generator, single_job)
    return lambda mels, frames, boxes: generate(runner, mels, face_inputs(frames, boxes), pad=pad)


def _pads_short_batches(predictor: runtime.Predictor, single_job: bool) -> bool:
    return predictor.device.kind != "cpu" or single_job


def generate(runner: batching.BatchRunner, *inputs: np.ndarray, pad: bool = True) -> np.ndarray:
    """Generator output for one batch. A short batch (the last, or the frames with a face) is either padded
    to the full one (pad=True: a GPU, where each input shape costs cuDNN set-up time and memory that a
    long-lived app keeps, and padding is nearly free) or run in power-of-two pieces, 7 frames as 4 + 2 + 1
    (pad=False: a CPU, which would spend as long on each padded frame as on a real one; the few shapes
    this makes stay within oneDNN's shape cache, runtime.MKLDNN_SHAPE_CACHE, for the process's later runs)."""
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


@dataclass
class Chunk:
    """A batch of output frames on its way: their boxes, and the mouths drawn for the frames with the face."""

    frames: List[Frame]
    boxes: List[Optional[Box]]
    live: List[int]  # positions of the frames with the face
    drawn: Optional[np.ndarray] = None  # the generator's faces for them, as 8-bit pixels (None: no face)


def draw_chunk(frames: List[Frame], boxes: List[Optional[Box]], mels: np.ndarray,
               generate: Callable[[np.ndarray, List[Frame], list], np.ndarray]) -> Chunk:  # fmt: skip
    """The generator's mouths for the frames of a chunk with the face in them (each with its own mel window)."""
    live = [i for i, box in enumerate(boxes) if box is not None]
    if not live:
        return Chunk(frames, boxes, live)
    drawn = mouth.to_faces(generate(mels[live], [frames[i] for i in live], [boxes[i] for i in live]))
    return Chunk(frames, boxes, live, drawn)


def paste_chunk(chunk: Chunk, paste: Callable[[Frame, Box, np.ndarray], Frame]) -> List[Frame]:
    """The chunk's frames with their new mouths pasted in; frames without the face as they came."""
    out = list(chunk.frames)
    if chunk.drawn is not None:
        for i, pixels in zip(chunk.live, chunk.drawn):
            out[i] = paste(chunk.frames[i], chunk.boxes[i], pixels)  # type: ignore[arg-type]
    return out


class Ahead:
    """Chunks drawn on worker threads, up to `depth` at a time, handed back in the order they were pushed: the
    generator draws the next chunks while the caller pastes and encodes one (depth 1: drawn at once, inline).

    Used as a context manager; on the way out, chunks not started are dropped and running ones waited for."""

    def __init__(self, depth: int) -> None:
        self.depth = max(1, depth)
        self._pool = ThreadPoolExecutor(self.depth, thread_name_prefix=AHEAD_THREAD) if self.depth > 1 else None
        self._pending: Deque["Future[T]"] = deque()

    def push(self, draw: Callable[[], T]) -> List[T]:
        """Start `draw`; returns the oldest results once `depth` are in flight (its own result at depth 1)."""
        if self._pool is None:
            return [draw()]
        self._pending.append(self._pool.submit(draw))
        ready = []
        while len(self._pending) >= self.depth:
            ready.append(self._pending.popleft().result())
        return ready

    def drain(self) -> List[T]:
        """The results still in flight, in order."""
        ready = []
        while self._pending:
            ready.append(self._pending.popleft().result())
        return ready

    def __enter__(self) -> "Ahead":
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def chunks_in_flight(frame_bytes: int, batch: int) -> int:
    """How many chunks a run keeps in flight: the one being pasted, and up to CHUNKS_AHEAD being drawn while
    their frames (`frame_bytes` each; 0 for a still's one frame) fit in AHEAD_BYTES."""
    ahead = CHUNKS_AHEAD if frame_bytes == 0 else min(CHUNKS_AHEAD, AHEAD_BYTES // (frame_bytes * batch))
    return 1 + ahead
