"""`python -m lipsync --doctor`: every finding on its own line, exit 0 only when a job can run, never hangs offline."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, Tuple

import huggingface_hub.constants
import pytest
from conftest import free_port

from lipsync import cpu, cuda, doctor, weights

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("python", "paddle", "cuda links", "libcudnn.so", "libcublas.so", "gpus", "device auto",
          "cpu", "ffmpeg", "hdr video", "ffprobe", "espeak-ng", "heic photos", "models dir", "wav2lip_hq", "s3fd", "generator", "detector",
          "precision", "edge-tts", "verdict")  # fmt: skip


@pytest.fixture(autouse=True)
def offline_edge_tts(monkeypatch):
    """Point the edge-tts check at a closed local port: tests never touch the network."""
    monkeypatch.setattr(doctor, "EDGE_TTS_HOST", "127.0.0.1")
    monkeypatch.setattr(doctor, "EDGE_TTS_PORT", free_port())


@pytest.fixture(autouse=True)
def offline_downloads(monkeypatch, tmp_path) -> str:
    """Every weights URL and the Hub endpoint on a closed local port, and an empty hub cache: never the network."""
    closed = f"http://127.0.0.1:{free_port()}"
    for name, entry in weights.WEIGHTS.items():
        if entry.url is not None:
            monkeypatch.setitem(weights.WEIGHTS, name, replace(entry, url=f"{closed}/{entry.filename}"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return closed


@pytest.fixture
def no_weights_here(monkeypatch, tmp_path) -> Path:
    """An empty $LIPSYNC_MODELS and cache: the generator must come from a download."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv(weights.MODELS_ENV, str(models))
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return models


@pytest.fixture
def weights_server() -> Iterator[Tuple[str, int]]:
    """A local port that accepts connections, standing in for a reachable download host."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()


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
    assert found["hdr video"] == "tone-mapped to SDR (ffmpeg has zscale and tonemap)", "Debian's ffmpeg has both"
    assert found["heic photos"].startswith("read (pillow-heif "), "requirements-cpu.txt installs it"
    assert found["device auto"].startswith(("cpu", "gpu"))
    assert found["wav2lip_hq"].startswith("models dir "), "conftest put random wav2lip_hq weights in $LIPSYNC_MODELS"
    assert found["generator"] == "wav2lip_hq ready (models dir)"
    assert found["gpen512"].startswith("not on this machine (downloaded on first use, ~287 MB); NOT verifiable")
    assert "unreachable" in found["edge-tts"] or "not installed" in found["edge-tts"]
    assert ("amx_bf16" in found["cpu"]) == ("amx_bf16" in cpu.cpu_flags()), "the features found at run time"


def test_the_precision_lines_give_the_gates_verdict_with_its_numbers(capsys):
    out = io.StringIO()
    doctor.main(out)
    lines = [line.split(None, 1)[1] for line in out.getvalue().splitlines() if line.startswith("precision ")]
    if not cpu.bf16_capable():
        assert lines == ["fp32: this CPU has neither AMX nor AVX-512 BF16, so there is no faster precision"]
        return
    assert [line.split(":")[0] for line in lines] == ["picture", "video"], lines
    for line in lines:
        assert re.match(r"(picture|video): (bf16|fp32) \(bf16( \((transposed convolutions|element-wise adds) in fp32\))? against fp32: "
                        r"PSNR [\d.]+ dB, p99\.9 \d+, max \d+ "
                        r"levels \((passed|failed); bounds", line), line  # fmt: skip


def test_without_ffmpeg_no_job_can_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg, ffprobe or espeak-ng
    code, found = _run()
    assert code == doctor.EXIT_BLOCKED
    assert found["ffmpeg"].startswith("missing") and "ffmpeg" in found["verdict"] and "hdr video" not in found
    assert found["espeak-ng"].startswith("missing (only"), "espeak-ng is optional: it must not block"


@pytest.mark.parametrize("published, expected", [("good", "sha256 verified"), ("bad", "sha256 MISMATCH")])
def test_weights_lines_say_whether_the_sha256_checks_out(monkeypatch, isolated_weights, published, expected):
    path = isolated_weights / "wav2lip_hq.pdparams"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if published == "good" else "0" * 64
    monkeypatch.setitem(weights.WEIGHTS, "wav2lip_hq", replace(weights.WEIGHTS["wav2lip_hq"], sha256=digest))
    _, found = _run()
    check = f"{expected}{': delete it' if published == 'bad' else ''}"
    assert found["wav2lip_hq"] == f"models dir {path} ({check}); pinned by sha256"


def test_every_weights_line_says_how_the_file_is_pinned_and_what_cannot_be_verified():
    _, found = _run()
    assert found["wav2lip_hq"].endswith("(unchecked); NOT verifiable: no published sha256 (PaddleGAN publishes none: "
                                        "a changed or damaged download is not caught)")  # fmt: skip
    for name, entry in weights.WEIGHTS.items():
        line = found[name]
        assert ("NOT verifiable: no published sha256 (" if entry.sha256 is None else "; pinned by sha256") in line, line
        if entry.hub is not None and entry.hub.revision is None:
            assert line.endswith(f"; not pinned by commit (no commit of {entry.hub.repo_id} known: its main branch "
                                 "is fetched, the sha256 pins the content)"), line  # fmt: skip
        elif entry.hub is not None:
            assert f"pinned by commit {entry.hub.revision[:12]}" in line, line


def test_offline_without_weights_no_job_can_run_and_it_says_what_to_put_where(no_weights_here):
    code, found = _run()
    assert code == doctor.EXIT_BLOCKED and found["verdict"] == "cannot run: fix generator"
    entry = weights.WEIGHTS["wav2lip_hq"]
    assert found["generator"].startswith("wav2lip_hq is not on this machine and cannot be downloaded (127.0.0.1: ")
    assert found["generator"].endswith(
        f"put wav2lip_hq.pdparams (from {entry.url}) in $LIPSYNC_MODELS (currently {no_weights_here})"
    )
    assert "--face_detector haar" in found["detector"], "no S3FD only means Haar: it must not block"
    assert found["wav2lip_hq"].startswith("not on this machine"), "the existing lines stay"


def test_a_reachable_download_host_lets_a_job_run(monkeypatch, no_weights_here, weights_server):
    host, port = weights_server
    entry = weights.WEIGHTS["wav2lip_hq"]
    monkeypatch.setitem(weights.WEIGHTS, "wav2lip_hq", replace(entry, url=f"http://{host}:{port}/wav2lip_hq.pdparams"))
    code, found = _run()
    assert code == doctor.EXIT_OK, found
    assert found["generator"] == "wav2lip_hq downloads on first use from 127.0.0.1 (~145 MB; it answers)"


def test_a_reachable_hub_serves_the_hub_models_and_the_detector(monkeypatch, no_weights_here, weights_server):
    host, port = weights_server
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://{host}:{port}")
    code, found = _run()
    assert code == doctor.EXIT_OK, found
    assert found["generator"].startswith("wav2lip_hq is not on this machine and cannot be downloaded")
    assert found["generator"].endswith(
        "wav2lip_gan downloads on first use from 127.0.0.1 (~436 MB; it answers): "
        "choose wav2lip_gan (--checkpoint_path wav2lip_gan on the command line)"
    )
    assert found["detector"] == "s3fd downloads on first use from 127.0.0.1 (~90 MB; it answers)"


def test_another_generator_on_this_machine_is_offered(monkeypatch, no_weights_here):
    (no_weights_here / "wav2lip.pth").write_bytes(b"stands in for the published file")
    digest = hashlib.sha256(b"stands in for the published file").hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, "wav2lip", replace(weights.WEIGHTS["wav2lip"], sha256=digest))
    code, found = _run()
    assert code == doctor.EXIT_OK, found
    assert found["generator"].endswith("wav2lip ready (models dir): choose wav2lip (--checkpoint_path wav2lip on "
                                       "the command line)")  # fmt: skip


def test_a_refused_models_dir_file_does_not_count(monkeypatch, no_weights_here):
    (no_weights_here / "wav2lip_hq.pdparams").write_bytes(b"not the published file")
    monkeypatch.setitem(weights.WEIGHTS, "wav2lip_hq", replace(weights.WEIGHTS["wav2lip_hq"], sha256="0" * 64))
    code, found = _run()
    assert code == doctor.EXIT_BLOCKED
    assert found["generator"].startswith("wav2lip_hq in $LIPSYNC_MODELS fails its sha256: put wav2lip_hq.pdparams")


def test_without_huggingface_hub_the_hub_models_say_what_to_install(monkeypatch, no_weights_here):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    code, found = _run()
    assert code == doctor.EXIT_BLOCKED
    assert "huggingface.co: huggingface_hub is not installed (pip install huggingface_hub)" in found["detector"]
    assert found["wav2lip_gan"].startswith("not on this machine"), "the cache lines still work without it"


@pytest.mark.parametrize("version, blocks", [((3, 11, 7), False), ((3, 10, 0), False), ((3, 9, 18), True)])
def test_python_older_than_the_minimum_blocks(version, blocks):
    line = doctor.python_line(version, "/usr/bin/python3")
    assert line.blocking is blocks
    assert line.text.startswith(f"{'.'.join(map(str, version))} (/usr/bin/python3)")
    if blocks:
        assert line.text.endswith("lipsync needs Python 3.10 or newer") and cuda.MIN_PYTHON == (3, 10)


def test_connection_check_answers_for_open_and_closed_ports():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert doctor.connection_problem("127.0.0.1", server.getsockname()[1], 2.0) is None
    assert doctor.connection_problem("127.0.0.1", free_port(), 2.0)


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


def test_an_ffmpeg_without_zscale_and_no_pillow_heif_are_named(monkeypatch):
    from lipsync import ffmpeg, picture

    monkeypatch.setattr(ffmpeg, "has_filters", lambda *names: False)
    monkeypatch.setattr(picture, "reads_heif", lambda: False)
    assert "lacks zscale or tonemap" in doctor._hdr_line().text
    assert doctor._heic_line().text == "cannot be read: pip install pillow-heif"
