"""Paddle Inference runtime: static export equals dygraph, exports are reused, OOM halves the batch."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
import pytest

from lipsync import cpu, device, gated, native, runtime
from lipsync.errors import LipSyncError

from conftest import ROOT


class Tiny(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(6, 4, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(4)

    def forward(self, audio, face):
        return paddle.nn.functional.sigmoid(self.bn(self.conv(face)) + audio.mean(axis=[1, 2, 3], keepdim=True))


SPECS = [((None, 1, 8, 4), "float32"), ((None, 6, 12, 12), "float32")]


def _tiny() -> Tiny:
    paddle.seed(3)
    layer = Tiny()
    layer.bn._mean.set_value(paddle.rand([4]))
    layer.bn._variance.set_value(paddle.rand([4]) + 0.5)
    layer.eval()
    return layer


def test_static_predictor_matches_dygraph_and_export_is_reused(tmp_path):
    layer = _tiny()
    calls = []

    def build():
        calls.append(1)
        return layer

    prefix = runtime.export_static(build, SPECS, tmp_path / "export")
    again = runtime.export_static(build, SPECS, tmp_path / "export")
    assert prefix == again and len(calls) == 1, "a finished export must be reused, not traced again"

    predictor = runtime.Predictor(prefix, runtime.Device("cpu", "requested"), threads=1)
    rng = np.random.default_rng(0)
    for batch in (3, 1, 5):  # varying batch sizes reuse one predictor
        a = rng.standard_normal((batch, 1, 8, 4)).astype(np.float32)
        f = rng.standard_normal((batch, 6, 12, 12)).astype(np.float32)
        expected = layer(paddle.to_tensor(a), paddle.to_tensor(f)).numpy()
        (got,) = predictor.run(a, f)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_predictor_runs_on_its_own_thread_whoever_calls_it(tmp_path, monkeypatch):
    """Paddle Inference keeps oneDNN state per calling thread: a server's worker threads come and go, and a
    predictor called from a fresh thread failed now and then ("could not execute a primitive"). Every call
    must run on the one thread that created the predictor, and closing it ends that thread."""
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    predictor = runtime.Predictor(prefix, runtime.Device("cpu", "requested"), threads=1)
    ran_on = []
    original = predictor._run_lane
    monkeypatch.setattr(predictor, "_run_lane", lambda *a: ran_on.append(threading.get_ident()) or original(*a))
    a, f = np.ones((2, 1, 8, 4), np.float32), np.ones((2, 6, 12, 12), np.float32)
    (expected,) = predictor.run(a, f)
    results = []
    for _ in range(4):  # each call from a new thread, as gradio's worker threads are
        caller = threading.Thread(target=lambda: results.append(predictor.run(a, f)[0]))
        caller.start()
        caller.join()
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)
    assert len(set(ran_on)) == 1 and ran_on[0] != threading.get_ident(), ran_on
    own = [t for t in threading.enumerate() if t.ident == ran_on[0]]
    predictor.close()
    assert own and not own[0].is_alive(), "close() must end the predictor's thread"
    with pytest.raises(RuntimeError):
        predictor.run(a, f)


def test_lanes_split_a_batch_between_clones_on_their_own_threads_and_change_no_output(tmp_path, monkeypatch):
    """With two lanes each half of a batch runs on a clone of its own, on its own thread; the outputs are one
    predictor's (to float rounding: a half batch may take another oneDNN kernel than the whole), a batch of
    one stays in one lane, and an input of length one (a still's face features) goes whole to each lane."""
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    cpu_device = runtime.Device("cpu", "requested")
    single = runtime.Predictor(prefix, cpu_device, threads=1)
    laned = runtime.Predictor(prefix, cpu_device, threads=2, lanes=2)
    assert (single.lanes, laned.lanes) == (1, 2)  # 2 threads: one each
    seen = []
    original = laned._run_lane

    def spy(lane, arrays):
        seen.append((threading.get_ident(), len(arrays[0]), len(arrays[1])))
        return original(lane, arrays)

    monkeypatch.setattr(laned, "_run_lane", spy)
    rng = np.random.default_rng(1)
    for batch in (7, 1, 2):
        a = rng.standard_normal((batch, 1, 8, 4)).astype(np.float32)
        f = rng.standard_normal((batch, 6, 12, 12)).astype(np.float32)
        np.testing.assert_allclose(laned.run(a, f)[0], single.run(a, f)[0], rtol=0, atol=1e-6)
    assert sorted((n, m) for _, n, m in seen) == [(1, 1), (1, 1), (1, 1), (3, 3), (4, 4)]  # 7 = 4 + 3, 1, 2 = 1 + 1
    assert len({ident for ident, _, _ in seen}) == 2 and threading.get_ident() not in {i for i, _, _ in seen}
    seen.clear()
    a = rng.standard_normal((6, 1, 8, 4)).astype(np.float32)
    one_face = rng.standard_normal((1, 6, 12, 12)).astype(np.float32)
    shared = np.repeat(one_face, 6, axis=0)
    np.testing.assert_allclose(laned.run(a, one_face)[0], single.run(a, shared)[0], rtol=0, atol=1e-6)
    assert [(n, m) for _, n, m in seen] == [(3, 1), (3, 1)]
    before = threading.active_count()
    laned.close()
    assert threading.active_count() == before - 2, "close() must end every lane's thread"
    with pytest.raises(RuntimeError):
        laned.run(a, shared)


@pytest.mark.parametrize("kind,threads,asked,lanes", [("cpu", 2, 2, 2), ("cpu", 8, 2, 2), ("cpu", 3, 2, 1),
                                                      ("cpu", 1, 2, 1), ("cpu", 4, 1, 1), ("gpu", 8, 2, 1)])
def test_lanes_only_where_the_threads_share_out_evenly_and_never_on_a_gpu(kind, threads, asked, lanes):
    assert runtime.lane_count(runtime.Device(kind, "requested"), threads, asked) == lanes


def test_the_precision_left_out_does_not_keep_a_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    probe = (np.zeros((1, 1, 8, 4), np.float32), np.zeros((1, 6, 12, 12), np.float32))
    before = threading.active_count()
    chosen = gated.predictor(prefix, runtime.Device("cpu", "requested"), "auto", lambda: probe,
                                     lambda out: (out.clip(0, 1) * 255).astype(np.uint8), threads=1)
    assert threading.active_count() == before + 1, "one predictor kept, one thread; the other one's thread ended"
    chosen.close()
    assert threading.active_count() == before


def test_a_thread_in_static_mode_still_exports_a_working_network(tmp_path):
    """paddle's dygraph/static mode is per thread, and a new thread starts in the mode another thread last set:
    a server's run thread started in static mode after a to_static elsewhere, and building a network there failed
    ("Can not find Variable 'conv2d_0.w_0' in the Scope"). The export must build in dygraph mode regardless."""
    from paddle.base import framework

    def export_in_static_mode():
        with framework._dygraph_guard(None):  # this thread in static mode, as such a thread would be
            assert not paddle.in_dynamic_mode()
            prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
            assert not paddle.in_dynamic_mode(), "the thread's own mode is left as it was"
        return prefix

    with ThreadPoolExecutor(1) as pool:
        prefix = pool.submit(export_in_static_mode).result()
    a, f = np.ones((2, 1, 8, 4), np.float32), np.ones((2, 6, 12, 12), np.float32)
    (got,) = runtime.Predictor(prefix, runtime.Device("cpu", "requested"), threads=1).run(a, f)
    np.testing.assert_allclose(got, _tiny()(paddle.to_tensor(a), paddle.to_tensor(f)).numpy(), atol=1e-5)


def test_export_key_changes_with_the_weights_file(tmp_path):
    weights = tmp_path / "w.pdparams"
    weights.write_bytes(b"one")
    first = runtime.export_key(weights, "wav2lip")
    weights.write_bytes(b"other contents")
    assert runtime.export_key(weights, "wav2lip") != first
    assert runtime.export_key(weights, "s3fd") != runtime.export_key(weights, "wav2lip")


def test_device_choice_on_a_machine_without_gpu(monkeypatch):
    monkeypatch.setattr(device, "_gpu_problem", lambda: "no CUDA device is visible")
    assert runtime.choose_device("cpu") == runtime.Device("cpu", "requested")
    auto = runtime.choose_device("auto")
    assert auto.kind == "cpu" and "no CUDA device" in auto.reason
    with pytest.raises(LipSyncError, match="--device gpu"):
        runtime.choose_device("gpu")


def test_real_gpu_probe_answers_on_this_machine():
    """On CPU paddle this must say why the GPU can't be used rather than crash."""
    problem = device._gpu_problem()
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        assert problem is None
    else:
        assert isinstance(problem, str) and problem


def _optimized(prefix):
    return sorted(prefix.parent.glob("optimized-*"))


def _legacy_export(tmp_path):
    """The tiny network's export; paddle 3's PIR programs are loaded as they are (nothing optimised is kept)."""
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    if runtime._model_file(prefix).suffix != runtime.LEGACY_PROGRAM_SUFFIX:
        pytest.skip("paddle 3 PIR program: its optimised form is not kept")
    return prefix


def _tiny_inputs():
    rng = np.random.default_rng(5)
    return rng.standard_normal((3, 1, 8, 4)).astype(np.float32), rng.standard_normal((3, 6, 12, 12)).astype(np.float32)


def test_paddles_passes_run_once_then_their_program_is_loaded(tmp_path, monkeypatch):
    """The IR-optimised program is kept beside the export (per precision and CPU) and later predictors load it
    without running paddle's passes again, with outputs equal bit for bit."""
    prefix = _legacy_export(tmp_path)
    cpu_device = runtime.Device("cpu", "requested")
    (first,) = runtime.Predictor(prefix, cpu_device, threads=1).run(*_tiny_inputs())
    (kept,) = _optimized(prefix)
    assert kept.name.startswith("optimized-fp32-") and (kept / "_optimized.pdmodel").is_file()
    assert not list(prefix.parent.glob(".optimizing-*")), "no staging folder is left behind"

    def no_passes(*args):
        raise AssertionError("paddle's passes ran again")

    monkeypatch.setattr(runtime, "_export_config", no_passes)
    (again,) = runtime.Predictor(prefix, cpu_device, threads=1).run(*_tiny_inputs())
    assert np.array_equal(first, again)
    monkeypatch.undo()
    monkeypatch.setattr(cpu, "cpu_model", lambda: "another CPU")
    runtime.Predictor(prefix, cpu_device, threads=1)
    assert len(_optimized(prefix)) == 2, "another CPU keeps its own optimised program"


def test_a_damaged_optimized_program_is_optimized_again(tmp_path):
    """paddle crashes the process on a damaged program: the kept one is checked against its seal first."""
    prefix = _legacy_export(tmp_path)
    cpu_device = runtime.Device("cpu", "requested")
    (first,) = runtime.Predictor(prefix, cpu_device, threads=1).run(*_tiny_inputs())
    (kept,) = _optimized(prefix)
    (kept / "_optimized.pdmodel").write_bytes(b"not a program")
    (again,) = runtime.Predictor(prefix, cpu_device, threads=1).run(*_tiny_inputs())
    assert np.array_equal(first, again)
    assert (kept / "_optimized.pdmodel").stat().st_size > len(b"not a program"), "written anew"


def test_a_cache_that_cannot_be_written_only_costs_the_passes(tmp_path, monkeypatch):
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runtime.tempfile, "mkdtemp", read_only)
    (got,) = runtime.Predictor(prefix, runtime.Device("cpu", "requested"), threads=1).run(*_tiny_inputs())
    assert got.shape == (3, 4, 12, 12) and not _optimized(prefix)


class TinyUp(paddle.nn.Layer):
    """A convolution, then a stride-2 transposed convolution as Wav2Lip's decoder has (which paddle 2.6.2's
    oneDNN refuses in bf16 on an AMD Zen 4), then a sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(6, 8, 3, padding=1)
        self.up = paddle.nn.Conv2DTranspose(8, 4, 3, stride=2, padding=1, output_padding=1)

    def forward(self, audio, face):
        x = paddle.nn.functional.relu(self.conv(face))
        return paddle.nn.functional.sigmoid(self.up(x) + audio.mean(axis=[1, 2, 3], keepdim=True))


@pytest.mark.skipif(not cpu.bf16_capable(), reason="this CPU has neither AMX nor AVX-512 BF16")
def test_on_a_bf16_cpu_the_gate_measures_bf16_in_some_scope(tmp_path):
    """Whatever op this CPU's oneDNN refuses in bf16, the gate measures bf16 in the widest scope that runs
    (before, one refused op made the whole network fp32 on an AMD Zen 4)."""
    from lipsync import precision

    def build():
        paddle.seed(4)
        return TinyUp()

    prefix = runtime.export_static(build, SPECS, tmp_path / "export")
    probe = _tiny_inputs()
    chosen = gated.predictor(prefix, runtime.Device("cpu", "requested"), "auto", lambda: probe,
                                     lambda out: (out.clip(0, 1) * 255).astype(np.uint8), threads=1)  # fmt: skip
    verdict = chosen.verdict
    assert not verdict.problem and verdict.scope in precision.BF16_SCOPES, verdict
    assert verdict.passed and chosen.precision == "bf16" and chosen.scope == verdict.scope, verdict
    if chosen.optimized is not None:  # what was dropped (fp32, a refused scope) keeps no optimised program
        assert _optimized(prefix) == [chosen.optimized], _optimized(prefix)


def test_bf16_only_on_cpus_that_run_it_natively():
    assert cpu.bf16_capable(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert cpu.bf16_capable(frozenset({"avx512f", "avx512_bf16"}))
    assert not cpu.bf16_capable(frozenset({"avx2", "avx512f", "fma"}))


def test_auto_precision_is_fp32_without_bf16_hardware(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    probe = (np.zeros((1, 1, 8, 4), np.float32), np.zeros((1, 6, 12, 12), np.float32))
    chosen = gated.predictor(prefix, runtime.Device("cpu", "requested"), "auto", lambda: probe, np.uint8)
    assert chosen.precision == "fp32" and chosen.verdict is None
    assert not list(prefix.parent.glob("gate-*")), "nothing was measured, so nothing is remembered"


@pytest.fixture
def hiding_chatter():
    """Native chatter held back, as the CLI's main asks for; the default (off) again afterwards."""
    native.hide_native_chatter(True)
    yield
    native.hide_native_chatter(False)


def test_paddle_pass_statistics_never_reach_stderr(capfd, caplog, hiding_chatter):
    """oneDNN's bf16 passes write '---  squashed …' lines from C++ to fd 2; with the CLI's switch on, our
    one-line errors stay alone."""
    with caplog.at_level("DEBUG", logger="lipsync.native"):
        with native.held_back(runtime.PASS_STATS, "paddle"):
            os.write(2, b"\x1b[37m---    squashed 6 quantize op\x1b[0m\n")
            os.write(2, b"W1201 something paddle warns about\n")
    err = capfd.readouterr().err
    assert "squashed" not in err, err
    assert "W1201 something paddle warns about" in err, "other native output still reaches the user"
    assert "paddle: ---    squashed 6 quantize op" in caplog.text
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n", "file descriptor 2 is the terminal again afterwards"


def test_bf16_predictor_prints_nothing(tmp_path):
    """A bf16 predictor (tried on CPUs with native bf16) is created without paddle's pass chatter on stderr."""
    prefix = runtime.export_static(_tiny, SPECS, tmp_path / "export")
    code = (
        "import sys; from pathlib import Path; from lipsync import native, runtime\n"
        "native.hide_native_chatter(True)\n"  # as the CLI does
        f"runtime.Predictor(Path({str(prefix)!r}), runtime.Device('cpu', 'requested'), precision='bf16')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "---" not in done.stderr, done.stderr


# --- the GPU probe, checked on the CPU ------------------------------------------------------------


def _numpy_probe() -> np.ndarray:
    """probe_network's network written out in numpy, independently of paddle's kernels."""
    values = device._probe_values
    c = device.PROBE_SHAPE[1]
    x = values(device.PROBE_SHAPE, 5) - 2
    w = (values((c, c, 3, 3), 3) - 1) / 2
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            y[0, :, i, j] = np.einsum("oikl,ikl->o", w, padded[0, :, i : i + 3, j : j + 3])
    y += (np.arange(c) / 2)[None, :, None, None]
    scale = np.arange(1, c + 1) / np.sqrt(4.0 + device.BN_EPSILON)
    y = (y - 0.5) * scale[None, :, None, None] - 0.25
    y = np.maximum(y, 0) + x
    y = np.concatenate([y, x], axis=1)
    up_w = (values((2 * c, c, 2, 2), 3) - 1) / 2
    up = np.einsum("nihw,ioab->nohawb", y, up_w).reshape(1, c, 2 * x.shape[2], 2 * x.shape[3])
    pooled = up.reshape(1, c, x.shape[2], 2, x.shape[3], 2).max(axis=(3, 5))
    return 1 / (1 + np.exp(-pooled))


def test_gpu_probe_network_computes_what_it_claims():
    """On the CPU place the probe gives the numpy reference: it really runs conv, BN, relu, add, concat, up, pool."""
    got = device.probe_network(paddle.CPUPlace())
    np.testing.assert_allclose(got, _numpy_probe(), atol=1e-6)
    assert got.std() > 0.05, "outputs spread out: a dropped op moves them by more than the tolerance"


def test_gpu_probe_check_accepts_right_numbers_and_refuses_failures_and_wrong_ones():
    cpu = lambda: device.probe_network(paddle.CPUPlace())  # noqa: E731
    assert device.check_probe(cpu) is None
    assert device.check_probe(lambda: cpu() + device.PROBE_ATOL / 5) is None, "TF32-sized rounding passes"
    assert device.check_probe(lambda: cpu() + 0.05) == "a test network gave wrong numbers on the GPU"
    assert device.check_probe(lambda: cpu()[:, :1]) == "a test network gave wrong numbers on the GPU"

    def no_kernel() -> np.ndarray:
        raise RuntimeError("(PreconditionNotMet) The kernel image is not available on this GPU (sm_90)\n  [trace]")

    assert device.check_probe(no_kernel) == (
        "a test network failed on the GPU ((PreconditionNotMet) The kernel image is not available on this GPU (sm_90))"
    )


def test_numpy_random_works_when_paddle_loads_after_lipsync():
    """paddle 2.6.2 + numpy 2.x: a zlib loaded after paddle broke numpy.random; lipsync loads zlib first."""
    code = "import lipsync; from lipsync.model import Wav2Lip; import numpy as np; print(np.random.default_rng(0).random())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip() == str(np.random.default_rng(0).random())


# --- stderr is left alone unless the CLI asks ------------------------------------------------------


def test_by_default_held_back_leaves_stderr_alone(capfd):
    """A server's other threads write to stderr while a predictor is made: nothing of theirs may vanish."""
    import threading

    assert not native.hiding_native_chatter(), "off unless a single-threaded program turns it on"
    before = os.fstat(2)
    written = threading.Event()

    def other_thread() -> None:
        os.write(2, b"a request's log line\n")
        written.set()

    with native.held_back(runtime.PASS_STATS, "paddle"):
        inside = os.fstat(2)
        worker = threading.Thread(target=other_thread)
        worker.start()
        assert written.wait(10)
        worker.join()
        assert capfd.readouterr().err == "a request's log line\n", "it arrived on the real stderr, at once"
    assert (inside.st_dev, inside.st_ino) == (before.st_dev, before.st_ino), "fd 2 was not redirected"


def test_the_cli_turns_holding_back_on_for_its_run_only(monkeypatch):
    from lipsync import cli

    seen = []
    monkeypatch.setattr(cli, "_main", lambda argv: seen.append(native.hiding_native_chatter()) or 0)
    assert cli.main([]) == 0
    assert seen == [True] and not native.hiding_native_chatter()
