"""Running a network over many inputs in batches that halve, for good, when memory runs out."""

from __future__ import annotations

import logging
from typing import Callable, List

import numpy as np

log = logging.getLogger(__name__)

# Lower-cased words in an error that mean GPU (or host) memory ran out: paddle's allocator, then CUDA's, cuDNN's
# and cuBLAS's status names and codes as paddle quotes them ("CUDNN error(2), CUDNN_STATUS_ALLOC_FAILED").
OOM_MARKERS = (
    "out of memory",
    "resourceexhausted",
    "cudaerrormemoryallocation",
    "cuda error(2)",
    "cudnn_status_alloc_failed",
    "cudnn error(2)",
    "cublas_status_alloc_failed",
    "cublas error(3)",
)
MIN_BATCH = 1


def is_out_of_memory(exc: BaseException) -> bool:
    """Paddle reports OOM as MemoryError, or as an error quoting paddle's, CUDA's, cuDNN's or cuBLAS's words for it."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in OOM_MARKERS)


class BatchRunner:
    """Runs a predictor over arrays in chunks of at most `batch`, halving the chunk for good on out-of-memory
    (callable from several threads at once: lipsync.synth.Ahead draws chunks side by side)."""

    def __init__(self, run: Callable[..., List[np.ndarray]], batch: int):
        self._run = run
        self.batch = max(MIN_BATCH, batch)

    def __call__(self, *arrays: np.ndarray) -> List[np.ndarray]:
        total = len(arrays[0])
        parts: List[List[np.ndarray]] = []
        start = 0
        while start < total:
            size = self.batch
            stop = min(total, start + size)
            try:
                parts.append(self._run(*(a[start:stop] for a in arrays)))
            except Exception as exc:
                if not is_out_of_memory(exc) or size <= MIN_BATCH:
                    raise
                self.batch = min(self.batch, max(MIN_BATCH, size // 2))  # callers drawing at once halve it once
                log.warning("out of memory: batch size halved to %d", self.batch)
                continue
            start = stop
        return [np.concatenate(outs) for outs in zip(*parts)]
