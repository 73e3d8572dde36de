"""Batches that halve when memory runs out (lipsync.batching): order kept, once per shortage, other errors raised."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lipsync import batching


def test_batch_runner_halves_on_out_of_memory_and_keeps_order():
    seen = []

    def run(x):
        seen.append(len(x))
        if len(x) > 3:
            raise MemoryError("Out of memory error on GPU 0")
        return [x * 2]

    runner = batching.BatchRunner(run, 16)
    (out,) = runner(np.arange(10.0))
    np.testing.assert_array_equal(out, np.arange(10.0) * 2)
    assert runner.batch == 2 and seen[:3] == [10, 8, 4]
    (out,) = runner(np.arange(5.0))  # the smaller batch sticks for later calls
    np.testing.assert_array_equal(out, np.arange(5.0) * 2)


def test_batch_runner_reraises_other_errors():
    def run(x):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):
        batching.BatchRunner(run, 8)(np.zeros(4))


def test_batch_runner_halves_once_when_callers_run_out_of_memory_together():
    barrier = threading.Barrier(2)

    def run(x):
        if len(x) > 8:
            barrier.wait(timeout=5)  # both callers are inside the failing call before either halves
            raise MemoryError("Out of memory error on CPU")
        return [x]

    shared = batching.BatchRunner(run, 16)
    results = []
    callers = [threading.Thread(target=lambda: results.append(shared(np.arange(16.0))[0])) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert shared.batch == 8, "two failures at 16 halve the batch once, not twice"
    assert len(results) == 2 and all(np.array_equal(r, np.arange(16.0)) for r in results)


@pytest.mark.parametrize(
    "message",
    [
        "ResourceExhaustedError: Out of memory error on GPU 0. Cannot allocate 1.2GB memory on GPU 0",
        "ExternalError: CUDNN error(2), CUDNN_STATUS_ALLOC_FAILED. [Hint: 'CUDNN_STATUS_ALLOC_FAILED'.]",
        "ExternalError: CUBLAS error(3), CUBLAS_STATUS_ALLOC_FAILED.",
        "ExternalError: CUDA error(2), out of memory. [Hint: 'cudaErrorMemoryAllocation'. The API call failed]",
        "ExternalError: CUDNN error(2). (at conv_kernel.cu:120)",
        "[Hint: 'cudaErrorMemoryAllocation'. The API call failed because it was unable to allocate memory]",
    ],
)
def test_out_of_memory_is_recognised_in_paddle_cuda_cudnn_and_cublas_words(message):
    assert batching.is_out_of_memory(RuntimeError(message))
    assert batching.is_out_of_memory(OSError(message))


@pytest.mark.parametrize(
    "message",
    [
        "ExternalError: CUDNN error(3), CUDNN_STATUS_BAD_PARAM.",
        "ExternalError: CUDA error(200), no kernel image is available for execution on the device.",
        "ExternalError: CUBLAS error(13), CUBLAS_STATUS_EXECUTION_FAILED.",
        "InvalidArgument: The shape of input[0] and input[1] is expected to be equal.",
    ],
)
def test_other_gpu_errors_are_not_out_of_memory(message):
    assert not batching.is_out_of_memory(RuntimeError(message)), "halving the batch would not help: it must surface"
    assert batching.is_out_of_memory(MemoryError())
