"""Batch dubbing on local worker processes: manifest checks, a six-row batch on two workers, a rerun that skips
what is done and redoes a cut-short file, a worker killed mid-job, and the command line's exit codes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from batch_helpers import (CLOSED_PORT_PROXY, check_batch, make_media, read_csv, typed_speech_seconds,
                           write_manifest)  # fmt: skip
from conftest import ROOT

from lipsync import batch
from lipsync.batch import DONE, SKIPPED, ManifestError, local, read_manifest
from lipsync.batch.manifest import jobs_from_rows
from lipsync.batch.cli import main as batch_main
from lipsync.options import LipSyncOptions

CPU_HAAR = LipSyncOptions(device="cpu", face_detector="haar")
INTERRUPT_DEADLINE_S = 120
LONGER_SPEECH = "A worker may be stopped at any moment, and it cleans up after itself before it goes."
SECOND_PRESS_S = 0.2  # a second Ctrl-C comes while the first one's clean-up runs
PART_POLL_S = 0.01  # a picture's job now encodes for well under a second: look often, or the batch ends first


# ---------------------------------------------------------------- the manifest


def _manifest(tmp_path: Path, text: str, name: str = "jobs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ("audio,outfile\nspeech.wav,a.mp4\n", ["'face' is missing"]),
    ("face,audio,mouth\nface.png,speech.wav,x\n", ["unknown column 'mouth'"]),
    ("face,audio,text\nface.png,speech.wav,\nface.png,speech.wav,Hello\n", ["row 2", "'audio' and 'text'", "both"]),
    ("face,audio,text\nface.png,,\n", ["row 1", "both are empty"]),
    ("face,audio,pads\nface.png,speech.wav,0 10 0\n", ["row 1", "column 'pads'", "four whole numbers"]),
    ("face,audio,face_detector\nface.png,s.wav,\nface.png,s.wav,mtcnn\n", ["row 2", "column 'face_detector'", "mtcnn"]),
    ("face,audio,voice\nface.png,speech.wav,en-US-GuyNeural\n", ["row 1", "column 'voice'", "text rows"]),
    ("face,text,rate\nface.png,Hi,300\n", ["row 1", "column 'rate'"]),
    ("face,audio\nhttps://example.com/a.png,speech.wav\n", ["row 1", "column 'face'", "a web address"]),
    ("face,audio,outfile\nface.png,a.wav,same.mp4\nface.png,b.wav,same.mp4\n", ["row 2", "'outfile'", "same.mp4"]),
    ("face,audio,outfile\nface.png,a.wav,a.webm\nface.png,b.wav,b.avi\n", ["row 2", "'outfile'", ".mkv or .webm",
                                                                         "got b.avi"]),
    ("Face,audio,face\nface.png,speech.wav,other.png\n", ["column 'face' twice"]),
    ("face,audio,\nface.png,speech.wav,\nface.png,speech.wav,0 20 0 0\n", ["row 2", "'0 20 0 0'", "without a name"]),
])  # fmt: skip
def test_a_malformed_manifest_is_one_error_naming_row_and_column(tmp_path, text, words):
    with pytest.raises(ManifestError) as caught:
        batch.run(_manifest(tmp_path, text), tmp_path / "out", options=CPU_HAAR)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert not (tmp_path / "out").exists(), "nothing runs, nothing is written"


def test_manifest_rows_become_jobs_with_options_parsed_as_the_cli_parses_them(tmp_path):
    (tmp_path / "media").mkdir()
    text = ("face,audio,text,pads,box,face_detector,face_enhancement,static,outfile\n"
            "media/a.png,media/s.wav,,\"0,20,0,0\",-1 -1 -1 -1,s3fd,yes,false,\n"
            "/abs/b.mp4,,Hello there friend,,10 90 20 80,blazeface,,on,out/b.mp4\n"
            "media/a.png,media/s.wav,,,,,,,\n")  # fmt: skip
    jobs = read_manifest(_manifest(tmp_path, text), CPU_HAAR)
    first, second, third = jobs
    assert first.face == tmp_path / "media" / "a.png" and first.audio == tmp_path / "media" / "s.wav"
    assert first.options.pads == (0, 20, 0, 0) and first.options.box is None
    assert first.options.face_detector == "sfd" and first.options.face_enhancement and not first.options.static
    assert first.options.device == "cpu", "the batch's defaults stay where a row says nothing"
    assert second.face == Path("/abs/b.mp4") and second.text == "Hello there friend" and second.audio is None
    assert second.options.box == (10, 90, 20, 80) and second.options.face_detector == "haar" and second.options.static
    assert third.options == CPU_HAAR
    placed = batch.place_outputs(jobs, tmp_path / "out")
    assert [p.outfile.name for p in placed] == ["a-s.mp4", "b.mp4", "a-s-2.mp4"]
    assert placed[1].outfile == (tmp_path / "out" / "out" / "b.mp4").resolve()


def test_a_spreadsheet_s_csv_is_read_as_meant(tmp_path):
    """What Excel and friends write: a byte-order mark, CRLF, capitalised and padded headers, empty columns
    without a name, and rows of commas only."""
    text = "\ufeffFace , Audio,OUTFILE,,\r\na.png,s.wav,one.MOV,,\r\n,,,,\r\n b.png , t.wav ,,,\r\n,,,,\r\n"
    path = tmp_path / "jobs.csv"
    path.write_bytes(text.encode("utf-8"))
    jobs = read_manifest(path, CPU_HAAR)
    assert [(job.row, job.face.name, job.audio.name) for job in jobs] == [(1, "a.png", "s.wav"), (2, "b.png", "t.wav")]
    assert jobs[0].outfile == Path("one.MOV") and jobs[1].outfile is None, "any container lipsync writes"
    lines = [{"Face": "a.png", " AUDIO ": "s.wav"}]
    assert read_manifest(_manifest(tmp_path, json.dumps(lines[0]) + "\n", "jobs.jsonl"))[0].audio == tmp_path / "s.wav"


def test_json_lines_manifest_takes_typed_values(tmp_path):
    lines = [{"face": "a.png", "text": "Hi there", "rate": 20, "pads": [0, 5, 0, 0], "static": True},
             {"face": "b.png", "audio": "s.wav", "fps": 12.5}]  # fmt: skip
    jobs = read_manifest(_manifest(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n", "jobs.jsonl"))
    assert jobs[0].rate == 20 and jobs[0].options.pads == (0, 5, 0, 0) and jobs[0].options.static
    assert jobs[1].options.fps == 12.5 and jobs[1].audio == tmp_path / "s.wav"
    with pytest.raises(ManifestError, match="line 2 is not JSON"):
        read_manifest(_manifest(tmp_path, '{"face": "a.png", "audio": "s.wav"}\n{face\n', "bad.jsonl"))


def test_the_command_exits_2_on_a_bad_manifest_before_any_work(tmp_path, capsys):
    manifest = _manifest(tmp_path, "face,audio,colour\nface.png,s.wav,red\n")
    assert batch_main([str(manifest), "--outdir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown column 'colour'" in err and err.count("\n") == 1


def test_a_ctrl_c_after_the_interrupted_batch_is_reported_still_ends_with_exit_code_130(tmp_path):
    """A second Ctrl-C that comes once the first one's batch is stopped (its report printed, the process on its
    way out) does not turn exit code 130 into death by SIGINT."""
    code = ("import os, signal, sys\n"
            "import lipsync.batch.cli as cli\n"
            "def stopped(*args, **kwargs):\n"
            "    raise KeyboardInterrupt\n"
            "cli.run = stopped\n"
            f"code = cli.main([{str(tmp_path / 'jobs.csv')!r}, '--outdir', {str(tmp_path / 'out')!r}])\n"
            "os.kill(os.getpid(), signal.SIGINT)  # the second press\n"
            "sys.exit(code)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 130 and done.stderr.startswith("interrupted: "), done.stderr


def test_python_m_lipsync_batch_dispatches_to_the_batch_command(tmp_path):
    manifest = _manifest(tmp_path, "face,text,audio\nface.png,Hi,s.wav\n")
    done = subprocess.run([sys.executable, "-m", "lipsync", "batch", str(manifest), "--outdir", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "row 1, columns 'audio' and 'text'" in done.stderr, done.stderr


# ---------------------------------------------------------------- whole batches on worker processes


@pytest.fixture(scope="module")
def small_media(tmp_path_factory, astronaut_bgr):
    folder = tmp_path_factory.mktemp("batch-media")
    media = make_media(folder, astronaut_bgr)
    return media, write_manifest(folder, media)


@pytest.fixture
def offline_tts(monkeypatch):
    """edge-tts fails at once (a closed port on 127.0.0.1 as its proxy): the workers speak with espeak-ng."""
    monkeypatch.setenv("HTTPS_PROXY", CLOSED_PORT_PROXY)
    monkeypatch.setenv("https_proxy", CLOSED_PORT_PROXY)


def test_an_earlier_output_is_done_only_when_whole_in_its_container_s_codecs_and_as_long_as_its_speech(
        tmp_path, monkeypatch):  # fmt: skip
    """The rerun's check, on files made here: each container's own codecs, sound and picture as long as each other
    and as the row's speech, nothing cut off; one ffprobe reads each output (a WAV speech is read from its header)."""
    from media_helpers import ffmpeg

    from lipsync import ffmpeg as tools
    from lipsync.batch.manifest import Job

    speech = tmp_path / "speech.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2:sample_rate=16000", speech)

    def made(name: str, *codecs: str, seconds: float = 2, sound: Path = speech) -> Path:
        out = tmp_path / name
        ffmpeg("-f", "lavfi", "-i", f"testsrc=s=64x64:r=25:d={seconds}", "-i", sound, "-shortest", *codecs, out)
        return out

    h264_aac, vp9_opus = ("-c:v", "libx264", "-c:a", "aac"), ("-c:v", "libvpx-vp9", "-c:a", "libopus")
    cut = made("cut.mkv", *h264_aac)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    outputs = {
        "whole.mp4": True, "whole.mkv": True, "whole.webm": True, "cut.mkv": False,
        "mpeg4.mkv": False,  # another video codec than the .mkv's H.264
        "short.mp4": False,  # a second where the speech lasts two
        "silent_end.mp4": False,  # the picture stops a second before its sound
    }  # fmt: skip
    made("whole.mp4", *h264_aac), made("whole.mkv", *h264_aac), made("whole.webm", *vp9_opus)
    made("mpeg4.mkv", "-c:v", "mpeg4", "-c:a", "aac"), made("short.mp4", *h264_aac, seconds=1)
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:r=25:d=1", "-i", speech, "-c:v", "libx264", "-c:a", "aac",
           tmp_path / "silent_end.mp4")  # fmt: skip
    probes = []
    run = tools.run
    monkeypatch.setattr(tools, "run", lambda args, *a, **k: probes.append(args[0]) or run(args, *a, **k))
    for name, whole in outputs.items():
        probes.clear()
        assert batch.results.is_complete(Job(1, speech, audio=speech, outfile=tmp_path / name)) is whole, name
        assert len(probes) <= 1, (name, probes)
    assert not batch.results.is_complete(Job(1, speech, audio=speech, outfile=tmp_path / "missing.mp4"))


def test_a_batch_on_two_workers_then_a_rerun_that_skips_what_is_done(small_media, offline_tts, tmp_path, capsys):
    media, manifest = small_media
    outdir = tmp_path / "out"
    seen = []
    rows = batch.run(manifest, outdir, workers=2, options=CPU_HAAR, progress=lambda *a: seen.append(a))
    check_batch(rows, outdir, media, typed_speech_seconds(tmp_path))
    assert len({row.worker for row in rows if row.status == DONE}) == 2, "both workers took jobs"
    assert ("jobs", 7, 7) in seen and any(stage == "frames" and done > 0 for stage, done, _ in seen)
    # a file cut short (as a copy or another tool might leave it) is redone; complete ones are skipped
    for cut in (Path(rows[0].outfile), Path(rows[5].outfile)):  # an mp4 and a .webm
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    code = batch_main([str(manifest), "--outdir", str(outdir), "--workers", "2", "--set", "device=cpu",
                       "--set", "face_detector=haar", "--quiet"])  # fmt: skip
    assert code == 1, "a row failed"
    statuses = [row["status"] for row in read_csv(outdir / "results.csv")]
    assert statuses == [DONE, SKIPPED, SKIPPED, "failed", SKIPPED, DONE, "failed"]
    assert "3 skipped, 2 failed" in capsys.readouterr().out
    placed = batch.place_outputs(read_manifest(manifest), outdir)
    assert batch.results.is_complete(placed[0]) and batch.results.is_complete(placed[5])


def test_a_job_whose_worker_is_killed_mid_job_is_retried_and_done(small_media, tmp_path, monkeypatch):
    temp = tmp_path / "temp"  # the driver's and so its workers' temp dir
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    media, _ = small_media
    jobs = [{"face": str(media["photo"]), "audio": str(media["speech"])},
            {"face": str(media["photo2"]), "audio": str(media["speech"])}]  # fmt: skip
    killed = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "frames" and done > 0 and not killed:  # the only worker is lip-syncing the first job
            killed.extend(_worker_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    rows = batch.run(jobs, tmp_path / "out", workers=1, options=CPU_HAAR, progress=progress)
    assert len(killed) == 1
    assert [(row.status, row.attempts) for row in rows] == [(DONE, 2), (DONE, 1)], rows
    assert "retried" in rows[0].notes and not rows[0].worker.endswith(f":{killed[0]}")
    listed = read_csv(tmp_path / "out" / "results.csv")
    assert [row["attempts"] for row in listed] == ["2", "1"]
    assert not list((tmp_path / "out").glob(".*.part")), "the killed encoder's partial file is cleaned up"
    left = [path.name for path in temp.iterdir() if "lipsync" in path.name]
    assert not left, "the killed worker's temp files (its job's canvas) are removed when the pool ends"


def test_a_worker_told_to_terminate_mid_job_unwinds_it_and_leaves_no_partial_file(small_media, tmp_path):
    """A pool one worker left terminates the others (SIGTERM): so it goes on Ctrl-C when one worker was between
    jobs. The job must unwind as on the driver's SIGINT, not abort in paddle's own SIGTERM handler (which left
    its ffmpeg to finish a partial file after the batch had ended)."""
    media, _ = small_media
    speech = tmp_path / "longer.wav"  # lip-syncing lasts seconds after its first frames, whatever the machine
    subprocess.run(["espeak-ng", "-w", str(speech), LONGER_SPEECH], check=True, capture_output=True)
    rows = [{"face": str(media["photo"]), "audio": str(speech)}]
    job = batch.place_outputs(jobs_from_rows(rows, tmp_path, CPU_HAAR), tmp_path / "out")[0]
    job.outfile.parent.mkdir()
    context = multiprocessing.get_context("spawn")
    events, gpus = context.Queue(), context.Queue()
    temp = tmp_path / "temp"
    temp.mkdir()
    setup = (events, gpus, 1, temp)
    with ProcessPoolExecutor(1, mp_context=context, initializer=local._init_worker, initargs=setup) as pool:
        future = pool.submit(local._work, job)
        while events.get(timeout=INTERRUPT_DEADLINE_S)[0] != local.EVENT_FRAMES:
            pass  # until the job is lip-syncing: its encoder runs
        (worker,) = pool._processes.values()  # (the pool's own handle: it reaps the worker)
        worker.terminate()
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=INTERRUPT_DEADLINE_S)
    assert worker.exitcode == local.STOPPED_EXIT, "unwound by lipsync's handler, not aborted"
    assert not list(job.outfile.parent.iterdir()), "no partial file, no output"
    assert not list(temp.glob("lipsync-worker-*/lipsync-*")), "the job's temp folders are removed as it unwinds"


def _worker_pids(parent: int = 0) -> list:
    """The worker processes `parent` (default: this process) spawned, not multiprocessing's resource tracker."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
            command = (entry / "cmdline").read_bytes() if status else b""
        except OSError:
            continue
        if f"\nPPid:\t{parent or os.getpid()}\n" in status and b"spawn_main" in command:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_the_workers_and_leaves_no_partial_file(small_media, tmp_path, presses):
    """Ctrl-C once, or twice (the second while the driver stops its workers): the workers' jobs unwind."""
    _, manifest = small_media
    outdir = tmp_path / "out"
    command = [sys.executable, "-m", "lipsync", "batch", str(manifest), "--outdir", str(outdir), "--workers", "2",
               "--set", "device=cpu", "--set", "face_detector=haar", "--quiet"]  # fmt: skip
    temp = tmp_path / "temp"  # the driver's and its workers' temp dir
    temp.mkdir()
    env = {**os.environ, "HTTPS_PROXY": CLOSED_PORT_PROXY, "TMPDIR": str(temp)}
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + INTERRUPT_DEADLINE_S
        while not list(outdir.rglob(".*.part")) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(PART_POLL_S)  # until a worker is encoding a video
        pids = _worker_pids(driver.pid)
        for press in range(presses):
            time.sleep(SECOND_PRESS_S if press else 0)
            driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=INTERRUPT_DEADLINE_S)
    finally:
        driver.kill()
    assert driver.returncode == 130, err
    assert "interrupted" in err and pids
    assert not list(outdir.rglob(".*.part")), "no partial file, hidden or not"
    listed = read_csv(outdir / "results.csv")
    assert len(listed) == 7 and "interrupted" in {row["status"] for row in listed}
    for job in batch.place_outputs(read_manifest(manifest), outdir):
        assert not job.outfile.exists() or batch.results.is_complete(job), job.outfile
    assert not [pid for pid in pids if _alive(pid)], "the workers are gone"
    assert not [path.name for path in temp.iterdir() if "lipsync" in path.name], "and their temp folders"
