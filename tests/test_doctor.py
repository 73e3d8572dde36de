"""`python -m lipsync --doctor`: every finding on its own line, exit 0 only when a job can run, never hangs offline."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Dict, Tuple

import pytest

from lipsync import doctor, weights

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("python", "paddle", "cuda links", "libcudnn.so", "libcublas.so", "gpus", "device auto",
          "ffmpeg", "ffprobe", "espeak-ng", "models dir", "wav2lip_hq", "s3fd", "edge-tts", "verdict")  # fmt: skip


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def offline_edge_tts(monkeypatch):
    """Point the edge-tts check at a closed local port: tests never touch the network."""
    monkeypatch.setattr(doctor, "EDGE_TTS_HOST", "127.0.0.1")
    monkeypatch.setattr(doctor, "EDGE_TTS_PORT", _closed_port())


def _run() -> Tuple[int, Dict[str, str]]:
    """The doctor's exit code and its lines by label."""
    out = io.StringIO()
    code = doctor.main(out)
    found = {}
    for line in out.getvalue().splitlines():
        text = line.strip()
        label = next((known for known in LABELS if text.startswith(known + " ")), text.split(" ", 1)[0])
        found[label] = text[len(label) :].strip()
    return code, found


def test_reports_every_line_and_passes_on_this_machine():
    code, found = _run()
    assert code == doctor.EXIT_OK, found
    assert set(LABELS) <= set(found), f"missing lines: {set(LABELS) - set(found)}"
    assert found["python"].startswith(sys.version.split()[0])
    assert found["ffmpeg"][0].isdigit() and found["verdict"].startswith("ok")
    assert found["device auto"].startswith(("cpu", "gpu"))
    assert found["wav2lip_hq"].startswith("models dir "), "conftest put random wav2lip_hq weights in $LIPSYNC_MODELS"
    assert "unreachable" in found["edge-tts"] or "not installed" in found["edge-tts"]


def test_without_ffmpeg_no_job_can_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg, ffprobe or espeak-ng
    code, found = _run()
    assert code == doctor.EXIT_BLOCKED
    assert found["ffmpeg"].startswith("missing") and "ffmpeg" in found["verdict"]
    assert found["espeak-ng"].startswith("missing (only"), "espeak-ng is optional: it must not block"


@pytest.mark.parametrize("published, expected", [("good", "sha256 verified"), ("bad", "sha256 MISMATCH")])
def test_weights_lines_say_whether_the_sha256_checks_out(monkeypatch, isolated_weights, published, expected):
    path = isolated_weights / "wav2lip_hq.pdparams"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if published == "good" else "0" * 64
    monkeypatch.setitem(weights.WEIGHTS, "wav2lip_hq", replace(weights.WEIGHTS["wav2lip_hq"], sha256=digest))
    _, found = _run()
    assert found["wav2lip_hq"] == f"models dir {path} ({expected}{': delete it' if published == 'bad' else ''})"


def test_connection_check_answers_for_open_and_closed_ports():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert doctor.connection_problem("127.0.0.1", server.getsockname()[1], 2.0) is None
    assert doctor.connection_problem("127.0.0.1", _closed_port(), 2.0)


def test_connection_check_gives_up_on_a_lookup_that_never_returns(monkeypatch):
    release = threading.Event()

    def stuck(*args, **kwargs):
        release.wait(30)  # a name lookup hanging offline
        raise OSError("lookup gave up")

    monkeypatch.setattr(socket, "create_connection", stuck)
    try:
        assert doctor.connection_problem("speech.example", 443, 0.2) == "no answer within 0.2 s"
    finally:
        release.set()  # let the abandoned attempt end quietly


def test_a_crashing_check_becomes_a_line_not_a_crash(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", [doctor._python, broken])
    out = io.StringIO()
    assert doctor.main(out) == doctor.EXIT_OK
    assert "check failed: RuntimeError('boom')" in out.getvalue()


def test_version_words_from_real_banners():
    assert doctor._version_word("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026") == "5.1.9-0+deb12u1"
    assert doctor._version_word("eSpeak NG text-to-speech: 1.51  Data at: /usr/lib") == "1.51"


def test_cli_doctor_needs_no_face_audio_or_outfile():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "lipsync", "--doctor"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "verdict" in done.stdout and "required" not in done.stderr
    bare = subprocess.run([sys.executable, "-m", "lipsync"], env=env, capture_output=True, text=True)
    assert bare.returncode == 2 and "--face" in bare.stderr, "a job still needs its inputs"
