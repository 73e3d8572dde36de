"""The precision gate (lipsync/precision.py): its decision on pixels, --precision, its remembered verdicts, and
the start-up overlap of decoding with loading (lipsync/pipeline.py), which must not change a single pixel."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import lipsync
from lipsync import cpu, gated, mouth, pipeline, precision, runtime
from lipsync.cli import build_parser, options_from_args
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

CPU = runtime.Device("cpu", "requested")
ALL_OPS = precision.ALL_OPS
ALL_CONVOLUTIONS = precision.ALL_CONVOLUTIONS
GPU = runtime.Device("gpu", "Tesla T4")


def _mouths() -> np.ndarray:
    """The gate's own real faces, as the 8-bit lower faces a run pastes."""
    faces, _ = precision.gate_inputs()
    return faces.copy()


def test_the_gate_accepts_a_one_level_drift():
    mouths = _mouths()
    drifted = np.clip(mouths.astype(np.int16) + np.random.default_rng(0).integers(-1, 2, mouths.shape), 0, 255)
    verdict = precision.judge(mouths, drifted.astype(np.uint8), "bf16")
    assert verdict.passed and verdict.max_levels == 1 and verdict.psnr_db > 48, verdict


def test_the_gate_rejects_a_shifted_mouth():
    """Two pixels of movement is what a viewer notices (a lip in the wrong place); it must fail every bound."""
    mouths = _mouths()
    shifted = np.roll(mouths, 2, axis=1)
    verdict = precision.judge(mouths, shifted, "bf16")
    assert not verdict.passed
    assert verdict.psnr_db < precision.MIN_PSNR_DB and verdict.max_levels > precision.MAX_LEVELS, verdict


def test_the_gate_rejects_rare_large_errors_that_psnr_alone_would_hide():
    mouths = _mouths()
    spiky = mouths.copy()
    flat = spiky.reshape(-1)
    flat[:: 997] = 255 - flat[:: 997]  # 0.1 % of the pixels inverted: PSNR stays high, the speckles show
    verdict = precision.judge(mouths, spiky, "bf16")
    assert not verdict.passed and verdict.max_levels > precision.MAX_LEVELS, verdict


def test_identical_pixels_pass_with_an_infinite_psnr_and_say_so():
    verdict = precision.judge(_mouths(), _mouths(), "bf16")
    assert verdict.passed and math.isinf(verdict.psnr_db) and "identical" in verdict.describe()


def test_a_verdict_names_its_numbers_and_bounds():
    text = precision.Verdict("bf16", 49.46, 6.0, 11, True).describe()
    assert text.startswith("bf16 against fp32: PSNR 49.5 dB, p99.9 6, max 11 levels (passed;"), text
    assert "≥ 40 dB" in text and "≤ 16 levels" in text


@pytest.mark.parametrize("value", ["auto", "fp32", "bf16", "fp16"])
def test_precision_parses_on_the_command_line(value):
    args = build_parser().parse_args(["--face", "f.png", "--audio", "a.wav", "--outfile", "o.mp4", "--precision", value])
    assert options_from_args(args).precision == value


def test_precision_defaults_to_auto():
    args = build_parser().parse_args(["--face", "f.png", "--audio", "a.wav", "--outfile", "o.mp4"])
    assert options_from_args(args).precision == "auto" == LipSyncOptions().precision


def test_an_unknown_precision_is_a_one_line_usage_error():
    proc = subprocess.run([sys.executable, "-m", "lipsync", "--face", "f.png", "--audio", "a.wav", "--outfile",
                           "o.mp4", "--precision", "int4"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--precision" in proc.stderr and "int4" in proc.stderr


def test_an_unknown_precision_in_the_api_is_a_lipsync_error():
    with pytest.raises(LipSyncError, match="precision must be one of auto, fp32, bf16, fp16"):
        LipSyncOptions(precision="half")


@pytest.mark.parametrize(
    "wanted, flags, device, problem",
    [("bf16", {"avx2"}, CPU, "neither AMX nor AVX-512 BF16"), ("bf16", {"amx_bf16"}, GPU, "not on a GPU"),
     ("fp16", {"amx_bf16"}, CPU, "GPU only")],
    ids=["bf16-without-hardware", "bf16-on-gpu", "fp16-on-cpu"],
)  # fmt: skip
def test_a_forced_precision_the_device_cannot_run_is_refused(monkeypatch, wanted, flags, device, problem):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    with pytest.raises(LipSyncError, match=problem):
        precision.check_forced(wanted, device)


def test_the_faster_precision_follows_the_cpu_features_found_at_run_time(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert precision.faster_precision(CPU) is None
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert precision.faster_precision(CPU) == "bf16"
    assert precision.faster_precision(GPU) == "fp16"


class _Fake:
    """A predictor whose bf16 output drifts by `DRIFT` (pixels in [0, 1]); counts what was made."""

    DRIFT = 0.0
    SCOPE_DRIFT: dict = {}  # a bf16 scope's own drift, where it differs from DRIFT
    REFUSED: tuple = ()  # bf16 scopes whose first run fails, as oneDNN refusing an op
    made: list = []

    def __init__(self, prefix, device, threads=None, precision="fp32", pool_mb=0, scope=ALL_OPS, lanes=1):
        _Fake.made.append(precision if scope == ALL_OPS else f"{precision}/{scope}")
        self.precision, self.scope, self.verdict = precision, scope, None

    def run(self, *arrays):
        if self.precision == "bf16" and self.scope in _Fake.REFUSED:
            raise RuntimeError("could not construct a memory descriptor using strides")
        base = np.linspace(0, 1, 96 * 96 * 3, dtype=np.float32).reshape(1, 3, 96, 96)
        drift = _Fake.SCOPE_DRIFT.get(self.scope, _Fake.DRIFT) if self.precision == "bf16" else 0.0
        return [np.clip(base + drift, 0, 1)]  # a sigmoid output stays in [0, 1]

    def close(self):
        pass

    forget = close


@pytest.fixture
def fake_predictors(monkeypatch):
    monkeypatch.setattr(runtime, "Predictor", _Fake)
    monkeypatch.setattr(_Fake, "made", [])
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    return _Fake


def _gated(folder, wanted="auto"):
    return gated.predictor(folder / "model", CPU, wanted, lambda: (np.zeros(1),), mouth.to_pixels)


def test_the_verdict_is_measured_once_then_remembered(tmp_path, fake_predictors):
    first = _gated(tmp_path)
    assert first.precision == "bf16" and sorted(fake_predictors.made) == ["bf16", "fp32"]
    fake_predictors.made.clear()
    again = _gated(tmp_path)
    assert again.precision == "bf16" and fake_predictors.made == ["bf16"], "a remembered verdict makes one predictor"
    assert again.verdict == first.verdict


def test_a_failed_verdict_is_remembered_as_fp32(tmp_path, fake_predictors, monkeypatch):
    monkeypatch.setattr(_Fake, "DRIFT", 0.2)
    assert _gated(tmp_path).precision == "fp32"
    fake_predictors.made.clear()
    chosen = _gated(tmp_path)
    assert chosen.precision == "fp32" and fake_predictors.made == ["fp32"] and not chosen.verdict.passed


def test_a_damaged_verdict_file_is_measured_again(tmp_path, fake_predictors):
    _gated(tmp_path)
    (saved,) = tmp_path.glob("gate-bf16-*.json")
    saved.write_text("{not json")
    fake_predictors.made.clear()
    assert _gated(tmp_path).precision == "bf16" and sorted(fake_predictors.made) == ["bf16", "fp32"]
    assert json.loads(saved.read_text())["passed"] is True


def test_another_machine_does_not_reuse_this_ones_verdict(tmp_path, fake_predictors, monkeypatch):
    _gated(tmp_path)
    monkeypatch.setattr(cpu, "cpu_model", lambda: "some other CPU")
    fake_predictors.made.clear()
    _gated(tmp_path)
    assert sorted(fake_predictors.made) == ["bf16", "fp32"], "a verdict belongs to the CPU it was measured on"


def test_a_forced_precision_skips_the_gate(tmp_path, fake_predictors):
    chosen = _gated(tmp_path, "bf16")
    assert chosen.precision == "bf16" and fake_predictors.made == ["bf16"] and chosen.verdict is None
    assert "as --precision asked" in precision.run_note("bf16", None, "bf16")


def test_where_onednn_refuses_some_op_bf16_runs_on_every_convolution(tmp_path, fake_predictors, monkeypatch):
    """paddle 2.6.2 on an AMD Zen 4 (AVX-512 BF16, no AMX) fails a bf16 element-wise add beside a bf16 transposed
    convolution on its first run: the gate must fall back to bf16 on the convolutions (adds in fp32), not to fp32
    for the whole network, and remember which scope ran."""
    monkeypatch.setattr(_Fake, "REFUSED", (precision.ALL_OPS,))
    first = _gated(tmp_path)
    assert first.precision == "bf16" and first.scope == ALL_CONVOLUTIONS
    assert fake_predictors.made == ["fp32", "bf16", "bf16/all-convolutions"], fake_predictors.made
    assert first.verdict.passed and first.verdict.scope == ALL_CONVOLUTIONS
    assert "bf16 (element-wise adds in fp32) against fp32: " in first.verdict.describe()
    fake_predictors.made.clear()
    again = _gated(tmp_path)
    assert fake_predictors.made == ["bf16/all-convolutions"], "the remembered verdict names its scope"
    assert again.scope == ALL_CONVOLUTIONS and again.verdict == first.verdict


def test_where_transposed_convolutions_are_refused_too_the_others_run_in_bf16(tmp_path, fake_predictors,
                                                                              monkeypatch):  # fmt: skip
    monkeypatch.setattr(_Fake, "REFUSED", (precision.ALL_OPS, ALL_CONVOLUTIONS))
    first = _gated(tmp_path)
    assert first.precision == "bf16" and first.scope == precision.CONVOLUTIONS
    assert fake_predictors.made == ["fp32", "bf16", "bf16/all-convolutions", "bf16/convolutions"], fake_predictors.made
    assert "bf16 (transposed convolutions in fp32) against fp32: " in first.verdict.describe()


def test_when_a_wider_scope_fails_the_gate_a_narrower_one_is_measured(tmp_path, fake_predictors, monkeypatch):
    monkeypatch.setattr(_Fake, "SCOPE_DRIFT", {ALL_OPS: 0.2, ALL_CONVOLUTIONS: 0.2, precision.CONVOLUTIONS: 1 / 255})
    chosen = _gated(tmp_path)
    assert chosen.precision == "bf16" and chosen.scope == precision.CONVOLUTIONS and chosen.verdict.passed
    made = ["fp32", "bf16", "bf16/all-convolutions", "bf16/convolutions"]
    assert fake_predictors.made == made, fake_predictors.made
    monkeypatch.setattr(_Fake, "SCOPE_DRIFT", {ALL_OPS: 0.2, ALL_CONVOLUTIONS: 0.2, precision.CONVOLUTIONS: 0.1})
    refused = _gated(tmp_path / "again")
    assert refused.precision == "fp32" and not refused.verdict.passed and not refused.verdict.problem
    assert refused.verdict.scope == precision.CONVOLUTIONS, "the narrowest scope's numbers are remembered"


def test_when_every_scope_is_refused_fp32_runs_and_the_verdict_says_why(tmp_path, fake_predictors, monkeypatch):
    monkeypatch.setattr(_Fake, "REFUSED", tuple(precision.BF16_SCOPES))
    chosen = _gated(tmp_path)
    assert chosen.precision == "fp32" and not chosen.verdict.passed
    assert chosen.verdict.describe() == "bf16 unavailable (could not construct a memory descriptor using strides)"


def test_a_forced_bf16_takes_the_widest_scope_that_runs_or_says_it_cannot(tmp_path, fake_predictors, monkeypatch):
    monkeypatch.setattr(_Fake, "REFUSED", (precision.ALL_OPS, ALL_CONVOLUTIONS))
    forced = _gated(tmp_path, "bf16")
    assert forced.precision == "bf16" and forced.scope == precision.CONVOLUTIONS and forced.verdict is None
    monkeypatch.setattr(_Fake, "REFUSED", tuple(precision.BF16_SCOPES))
    with pytest.raises(LipSyncError, match=r"^--precision bf16 failed on this CPU \(could not construct"):
        _gated(tmp_path, "bf16")


def test_run_notes_carry_the_verdict():
    passed = precision.Verdict("bf16", 49.5, 6.0, 11, True)
    assert precision.run_note("bf16", passed, "auto").startswith("The generator ran in bf16: bf16 against fp32: PSNR")
    assert "--precision fp32 turns it off" in precision.run_note("bf16", passed, "auto")
    assert precision.run_note("fp32", replace(passed, passed=False), "auto").startswith("The generator ran in fp32")
    assert precision.run_note("fp32", None, "auto") is None, "no gate ran: nothing to say"


def _frames(path):
    from conftest import read_video_frames

    return read_video_frames(path)


def test_loading_while_decoding_changes_no_pixel(media, tmp_path, monkeypatch):
    """The start-up overlap (networks load while the audio, mel and picture decode) against the same run done
    one step after the other: the decoded output frames are equal, bit for bit."""
    options = LipSyncOptions(device="cpu", face_detector="haar", precision="fp32")
    together, apart = tmp_path / "together.mp4", tmp_path / "apart.mp4"
    lipsync.run(media["photo"], media["speech"], together, options)
    monkeypatch.setattr(pipeline, "OVERLAP_LOADING", False)
    lipsync.run(media["photo"], media["speech"], apart, options)
    a, b = _frames(together), _frames(apart)
    assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_run_says_which_precision_the_generator_used(media, tmp_path, monkeypatch):
    """On a CPU with bf16 the notes carry the gate's verdict; elsewhere a forced fp32 run says nothing of it.
    paddle 2.6.2 (what lipsync pins) runs bf16 on AMX and on AVX-512 BF16 alike, so the gate must measure it there;
    paddle 3.3.1's PIR passes fail the generator in bf16 on an AMD Zen 4 whatever ops are chosen ("std::exception"),
    and then the note must say so."""
    options = LipSyncOptions(device="cpu", face_detector="haar")
    result = lipsync.run(media["photo"], media["speech"], tmp_path / "auto.mp4", options)
    said = [note for note in result.notes if note.startswith(precision.NOTE_START)]
    if cpu.bf16_capable():
        measured = "against fp32: " in said[0] if said else False
        refused = runtime.paddle_version().startswith("3.") and "bf16 unavailable (" in (said or [""])[0]
        assert len(said) == 1 and (measured or refused), result.notes
        assert result.precision == said[0][len(precision.NOTE_START):].split(":")[0]
    else:
        assert not said and result.precision == "fp32", result.notes
    forced = lipsync.run(media["photo"], media["speech"], tmp_path / "fp32.mp4", replace(options, precision="fp32"))
    assert not [note for note in forced.notes if note.startswith(precision.NOTE_START)] and forced.precision == "fp32"
