"""The engine: exports never touch a model lipsync.load_wav2lip() handed out, keep no dygraph model alive (not even
until a later collection), and its predictors are per thread count."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import paddle
import pytest

import lipsync
from lipsync import runtime, weights
from lipsync.engine import Engine
from lipsync.model import Wav2Lip
from lipsync.options import LipSyncOptions

CPU = runtime.Device("cpu", "requested")
OPTIONS = LipSyncOptions(device="cpu", threads=1)


@pytest.fixture
def fresh_exports(tmp_path, monkeypatch):
    """An empty cache, so the engine really builds and traces its networks."""
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))


def _fixed_output(model: Wav2Lip) -> np.ndarray:
    rng = np.random.default_rng(9)
    mel = paddle.to_tensor(rng.uniform(-4, 0, (2, 1, 80, 16)).astype(np.float32))
    face = paddle.to_tensor(rng.uniform(0, 1, (2, 6, 96, 96)).astype(np.float32))
    with paddle.no_grad():
        return model(mel, face).numpy()


def test_exporting_leaves_the_shared_model_as_it_was(fresh_exports):
    from paddle.jit.dy2static.program_translator import StaticFunction

    shared = lipsync.load_wav2lip()
    attributes, expected = set(vars(shared)), _fixed_output(shared)
    engine = Engine()
    engine.generator(OPTIONS, CPU)
    engine.still_generator(OPTIONS, CPU)
    assert lipsync.load_wav2lip() is shared, "still the cached model"
    assert type(shared) is Wav2Lip and set(vars(shared)) == attributes, "nothing added (to_static sets .forward)"
    assert not isinstance(shared.forward, StaticFunction) and shared.forward.__func__ is Wav2Lip.forward
    assert not shared.training
    # the same weights and graph: equal up to float summation order (the engine sets the math library's threads)
    np.testing.assert_allclose(_fixed_output(shared), expected, rtol=0, atol=1e-5)


def test_models_built_for_export_are_dropped_once_the_predictors_exist(fresh_exports, monkeypatch):
    built = []
    real = weights.build_wav2lip

    def spy(source: str) -> Wav2Lip:
        model = real(source)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(weights, "build_wav2lip", spy)
    engine = Engine()
    gc.disable()  # no automatic collection: the engine itself must let them go, on the thread that built them
    try:
        whole, split = engine.generator(OPTIONS, CPU), engine.still_generator(OPTIONS, CPU)
        alive = [ref() is not None for ref in built]
    finally:
        gc.enable()
    assert len(built) == 3, "one private model per export: the generator, the face encoder, the still decoder"
    # a traced model is held in reference cycles: left to a later collection on some server thread, that kept 0.8 GB
    assert alive == [False, False, False], "no dygraph model outlives its network's build"
    assert whole.run(*[np.zeros((1, 1, 80, 16), np.float32), np.zeros((1, 6, 96, 96), np.float32)])
    assert split.encoder.run(np.zeros((1, 6, 96, 96), np.float32))


def test_build_wav2lip_gives_a_new_model_each_time():
    a, b = weights.build_wav2lip(), weights.build_wav2lip()
    assert a is not b and a is not lipsync.load_wav2lip() and not a.training
    np.testing.assert_array_equal(_fixed_output(a), _fixed_output(lipsync.load_wav2lip()))


def test_predictors_are_kept_per_thread_count():
    engine = Engine()
    one = engine.generator(OPTIONS, CPU)
    assert engine.generator(OPTIONS, CPU) is one, "built once, then shared"
    from dataclasses import replace

    assert engine.generator(replace(OPTIONS, threads=2), CPU) is not one


def test_released_networks_are_freed_and_load_again_when_asked_for():
    engine = Engine()
    first = engine.generator(OPTIONS, CPU)
    gone = weakref.ref(first)
    del first
    engine.release()
    gc.collect()
    assert gone() is None, "the engine held the last reference: the predictor is freed"
    again = engine.generator(OPTIONS, CPU)
    assert again is not None and engine.generator(OPTIONS, CPU) is again, "loaded again, then shared again"


def test_the_feathered_paste_gets_the_generators_that_draw_only_the_rows_it_reads():
    """Blend "feather" runs exports that draw rows 35..95, equal to the whole generator's rows there under
    Paddle Inference as well; "box" (the reference's paste) keeps the whole face."""
    from dataclasses import replace

    engine = Engine()
    feather = replace(OPTIONS, precision="fp32")
    box = replace(feather, blend="box")
    rng = np.random.default_rng(4)
    mel = rng.uniform(-4, 0, (3, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (3, 6, 96, 96)).astype(np.float32)
    whole, lower = engine.generator(box, CPU).run(mel, face)[0], engine.generator(feather, CPU).run(mel, face)[0]
    assert whole.shape == (3, 3, 96, 96) and lower.shape == (3, 3, 61, 96)
    np.testing.assert_allclose(lower, whole[:, :, 35:], rtol=0, atol=1e-5)
    still_whole, still_lower = engine.still_generator(box, CPU), engine.still_generator(feather, CPU)
    features = still_whole.encoder.run(face[:1])
    np.testing.assert_allclose(still_lower.decoder.run(mel, *features)[0],
                               still_whole.decoder.run(mel, *features)[0][:, :, 35:], rtol=0, atol=1e-5)  # fmt: skip
