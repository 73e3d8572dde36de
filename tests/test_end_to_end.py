"""Whole runs on real media: a photo and a moving video with espeak-ng speech, through the API and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ffprobe, read_video_frames, speech_frames, speech_seconds, x264_options

import lipsync
from lipsync import audio, blend
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu")
FRAME_TOLERANCE_S = 1 / 25 + 0.03  # one frame, plus AAC's block granularity
ENHANCED_SECONDS = 1.2  # the face enhancement tests' speech: 30 frames, GPEN on each


def _streams(path: Path) -> dict:
    info = ffprobe(path)
    return {s["codec_type"]: s for s in info["streams"]} | {"format": info["format"]}


def _check_output(out: Path, speech: Path, size: tuple) -> dict:
    """H.264 yuv420p + AAC, the input's size, as long as the speech, moov atom first."""
    s = _streams(out)
    assert s["video"]["codec_name"] == "h264" and s["video"]["pix_fmt"] == "yuv420p"
    assert s["audio"]["codec_name"] == "aac"
    assert (int(s["video"]["width"]), int(s["video"]["height"])) == size
    assert abs(float(s["format"]["duration"]) - speech_seconds(speech)) <= FRAME_TOLERANCE_S
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    return s


def _face_changed_background_kept(result: np.ndarray, original: np.ndarray) -> None:
    """The lower face (astronaut: x 170–270, y 140–230) changed; far corners did not (beyond codec noise)."""
    diff = np.abs(result.astype(np.int16) - original.astype(np.int16))
    assert diff[150:220, 185:255].mean() > 15, f"the mouth region should be regenerated: {diff[150:220, 185:255].mean()}"
    far = np.concatenate([diff[380:, :120].ravel(), diff[:60, 400:].ravel()])
    assert far.mean() < 5 and diff[150:220, 185:255].mean() > 4 * far.mean(), "far pixels: codec noise only"


def test_photo_with_speech_through_the_api(media, astronaut_bgr, tmp_path):
    seen = []
    out = tmp_path / "out" / "talking.mp4"
    result = lipsync.run(media["photo"], media["speech"], out, HAAR, progress=lambda *a: seen.append(a))
    _check_output(out, media["speech"], (512, 512))
    frames = read_video_frames(out)
    assert result.frames == speech_frames(media["speech"], 25)
    # one frame per mel window, then the last frame held until the speech ends
    assert result.frames <= len(frames) and abs(len(frames) - speech_seconds(media["speech"]) * 25) <= 1
    _face_changed_background_kept(frames[len(frames) // 2], astronaut_bgr)
    assert " threads=1 " in x264_options(out), "a picture drawn on the CPU is encoded in one thread"
    stages = [stage for stage, _, _ in seen]
    assert stages[0] == "reading audio" and "lip-syncing" in stages and stages[-1] == "encoding"
    done, total = max(((d, t) for s, d, t in seen if s == "lip-syncing"), key=lambda x: x[0])
    assert done == total == result.frames


def test_video_shorter_than_speech_plays_forward_and_back(media, astronaut_bgr, tmp_path):
    """The 2 s clip under ~3.5 s of speech: output lasts as long as the speech, and the motion reverses."""
    out = tmp_path / "video.mp4"
    lipsync.run(media["video"], media["speech"], out, replace(HAAR, blend="box"))
    s = _check_output(out, media["speech"], (512, 512))
    assert abs(float(s["video"]["r_frame_rate"].split("/")[0]) / float(s["video"]["r_frame_rate"].split("/")[1]) - 25) < 0.01
    frames = read_video_frames(out)
    assert len(frames) > 50  # beyond the clip's 50 frames: it looped instead of stopping
    if len(os.sched_getaffinity(0)) > 1:
        assert " threads=1 " not in x264_options(out), "a video keeps ffmpeg's threads"
    # frame 50 is source frame 48 (ping-pong, no repeated turn frame): the far edge must match it
    source = read_video_frames(media["video"])
    assert np.abs(frames[50, 380:, :100].astype(int) - source[48, 380:, :100]).mean() < 3
    assert np.abs(frames[50, 380:, :100].astype(int) - source[49, 380:, :100]).mean() > 3


def _marked_animation(picture: np.ndarray, path: Path, marks: int, frame_ms: int) -> Path:
    """An animated GIF or (lossless) WebP of the picture whose top-left corner shows a grey level 50 * i in its
    i-th frame."""
    from PIL import Image

    frames = []
    for i in range(marks):
        marked = picture[..., ::-1].copy()
        marked[:48, :48] = 50 * i
        frames.append(Image.fromarray(marked))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, lossless=True)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".webp"])  # ffmpeg decodes the GIF, Pillow the animated WebP
def test_an_animation_at_10_frames_a_second_speaks_at_25_with_its_frames_held(media, astronaut_bgr, tmp_path, suffix):
    """An animation (5 frames, 10 frames/s) under ~3.5 s of speech: the mouth moves at --fps (25) while each of
    its frames is held for its 100 ms (2 or 3 output frames), and the short animation plays forward and back."""
    clip = _marked_animation(astronaut_bgr, tmp_path / f"cartoon{suffix}", marks=5, frame_ms=100)
    out = tmp_path / "cartoon.mp4"
    result = lipsync.run(clip, media["speech"], out, HAAR)
    assert (result.fps, result.frames) == (25.0, speech_frames(media["speech"], 25.0))
    s = _check_output(out, media["speech"], (512, 512))
    assert s["video"]["avg_frame_rate"] == "25/1"
    marks = np.rint(read_video_frames(out)[:, 8:40, 8:40].mean(axis=(1, 2, 3)) / 50).astype(int)
    runs = np.split(marks, np.flatnonzero(np.diff(marks)) + 1)
    assert [int(run[0]) for run in runs[:9]] == [0, 1, 2, 3, 4, 3, 2, 1, 0], "forward, then back"
    assert all(len(run) in (2, 3) for run in runs[:4]), "each 100 ms frame held for 2.5 output frames"
    held = tmp_path / "held.mp4"
    assert lipsync.run(clip, media["speech"], held, replace(HAAR, fps=10.0)).fps == 10.0, "--fps 10 keeps its rate"


def test_a_phone_s_hdr_video_speaks_in_its_own_colours(media, astronaut_bgr, tmp_path):
    """HLG video (what phones record) of the photo: the result is tone-mapped SDR, near the photo's colours away from
    the mouth (read as it is, it came out dark and grey), and the notes say why it looks as it does."""
    from media_helpers import hdr_clip

    clip = hdr_clip(media["photo"], tmp_path, "arib-std-b67")
    out = tmp_path / "hlg.mp4"
    result = lipsync.run(clip, media["speech"], out, HAAR)
    assert any("is HLG HDR video: its frames are tone-mapped to SDR (BT.709)" in note for note in result.notes)
    top = read_video_frames(out)[:, :160].astype(int)  # forehead and background: no mouth
    assert np.abs(top - astronaut_bgr[:160]).mean(axis=(1, 2, 3)).max() < 12  # 9 here: H.264 and the roll-off


def test_static_flag_uses_the_first_frame_only(media, tmp_path):
    out = tmp_path / "static.mp4"
    lipsync.run(media["video"], media["speech"], out, replace(HAAR, static=True))
    frames = read_video_frames(out)
    corner = frames[:, 380:, :100].astype(int)
    assert np.abs(corner - corner[0]).max() < 12, "a still face must not move"


def test_s3fd_path_through_paddle_inference(media, s3fd_weights, tmp_path):
    """The default detector, with planted weights (every anchor is a face): plumbing and output checks."""
    out = tmp_path / "sfd.mp4"
    opts = LipSyncOptions(detector_weights=str(s3fd_weights), device="cpu")
    lipsync.run(media["photo"], media["speech"], out, opts)
    _check_output(out, media["speech"], (512, 512))


def test_torch_checkpoint_end_to_end(media, tmp_path, isolated_weights):
    """A Rudrabha-style legacy .pth (module. prefix, optimizer state) drives a run like the .pdparams does."""
    import paddle
    from torchfile_writer import save_torch, torch_names, training_checkpoint

    state = paddle.load(str(isolated_weights / "wav2lip_hq.pdparams"))
    pth = tmp_path / "my checkpoint.v1.pth"
    save_torch(training_checkpoint(torch_names(state)), pth, legacy=True)
    out_pth, out_pd = tmp_path / "pth.mp4", tmp_path / "pd.mp4"
    lipsync.run(media["photo"], media["speech"], out_pth, replace(HAAR, checkpoint=str(pth)))
    lipsync.run(media["photo"], media["speech"], out_pd, HAAR)
    a, b = read_video_frames(out_pth), read_video_frames(out_pd)
    assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 2, "same weights, same video"


def run_cli(*args: str, tmpdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "lipsync", *args], capture_output=True, text=True, env=env, cwd=str(tmpdir)
    )


def test_cli_run_writes_the_video_and_leaves_no_temp(media, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "cli out.mp4"
    proc = run_cli("--face", str(media["video"]), "--audio", str(media["speech"]), "--outfile", str(out),
                   "--face_detector", "haar", "--resize_factor", "2", "--cpu", tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _check_output(out, media["speech"], (256, 256))
    assert list(scratch.iterdir()) == [], "no temp files left, nothing written in the working directory"
    frames, source = read_video_frames(out), read_video_frames(media["video"])
    half = np.ascontiguousarray(source[10, ::2, ::2])  # the source frame at --resize_factor 2, near enough
    assert np.abs(frames[10, 75:110, 92:128].astype(int) - half[75:110, 92:128]).mean() > 10, "the mouth moved"


@pytest.mark.parametrize("given, voice, spoken_by", [("--text", "en-GB-SoniaNeural", "en-gb"),
                                                    ("stdin", "fr-FR-DeniseNeural", "fr-fr")])  # fmt: skip
def test_cli_speaks_typed_text(media, tmp_path, given, voice, spoken_by):
    """--text (or --text - and the words on standard input) instead of an audio file: edge-tts, unreachable here (a
    refused proxy, as offline), gives way to espeak-ng in the voice's language, which a note says; the result lasts
    as long as that speech, and its temporary folder is gone."""
    from conftest import refused_proxy

    from lipsync import tts

    words = "Good morning, and welcome."
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "typed.mp4"
    text = [words] if given == "--text" else ["-"]
    env = dict(os.environ, TMPDIR=str(scratch), PYTHONPATH=str(ROOT), HTTPS_PROXY=refused_proxy(), NO_PROXY="")
    proc = subprocess.run([sys.executable, "-m", "lipsync", "--face", str(media["photo"]), "--text", *text, "--voice",
                           voice, "--outfile", str(out), "--face_detector", "haar", "--cpu"],
                          input=words if given == "stdin" else "", capture_output=True, text=True, env=env,
                          cwd=str(scratch))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"note: spoken offline by espeak-ng ({spoken_by}): " in proc.stderr  # unreachable, or not installed
    reference = tts.espeak_speak(words, voice, 0, tmp_path).path  # what espeak-ng makes of the words alone
    _check_output(out, reference, (512, 512))
    assert list(scratch.iterdir()) == [], "the spoken text's folder is removed"


def test_a_webm_is_vp9_and_opus_and_speaks_as_the_mp4_does(media, astronaut_bgr, tmp_path):
    """The output's name chooses the container: a picture's job (its frames laid over the still by ffmpeg) written
    as a .webm is VP9 and Opus, as long as the speech, the face changed and nothing else."""
    out = tmp_path / "talking.webm"
    result = lipsync.run(media["photo"], media["speech"], out, HAAR)
    s = _streams(out)
    assert (s["video"]["codec_name"], s["audio"]["codec_name"], s["format"]["format_name"]) == ("vp9", "opus",
                                                                                               "matroska,webm")
    assert (s["video"]["width"], s["video"]["height"], result.outfile) == (512, 512, out)
    assert abs(float(s["format"]["duration"]) - speech_seconds(media["speech"])) <= FRAME_TOLERANCE_S
    _face_changed_background_kept(read_video_frames(out)[20], astronaut_bgr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talking.webm"]


def test_cli_on_a_photo_changes_the_face_and_nothing_else(media, astronaut_bgr, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "photo.mp4"
    proc = run_cli("--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(out),
                   "--face_detector", "haar", "--pads", "0", "10", "0", "0", tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out}: ") and " frames at 25 fps " in proc.stdout
    _check_output(out, media["speech"], (512, 512))
    _face_changed_background_kept(read_video_frames(out)[20], astronaut_bgr)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_face", "face file not found"),
        ("folder_as_audio", "is a folder: give a file in it"),
        ("text_as_video", "cannot be read as a picture or a video"),
        ("no_face", "No face found"),
        ("silent_video_as_audio", "no audio track"),
        ("not_mp4", "the output must be a .mp4, .mov, .mkv or .webm file (got o.avi)"),
        ("bad_box", "box"),
    ],
)
def test_cli_errors_are_one_line_exit_2_no_traceback(case, expect, media, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    face, speech, out, extra = str(media["photo"]), str(media["speech"]), str(tmp_path / "o.mp4"), []
    if case == "missing_face":
        face = str(tmp_path / "nope.jpg")
    elif case == "folder_as_audio":
        speech = str(tmp_path)
    elif case == "text_as_video":
        face = str(tmp_path / "notes.mp4")
        Path(face).write_text("not a video\n")
    elif case == "no_face":
        import cv2

        face = str(tmp_path / "wall.png")
        cv2.imwrite(face, np.full((240, 320, 3), 90, np.uint8))
    elif case == "silent_video_as_audio":
        speech = str(media["video"])
    elif case == "not_mp4":
        out = str(tmp_path / "o.avi")
    elif case == "bad_box":
        extra = ["--box", "100", "50", "0", "10"]
    proc = run_cli("--face", face, "--audio", speech, "--outfile", out, "--face_detector", "haar", *extra,
                   tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(out).exists()
    assert list(scratch.iterdir()) == []


def test_package_has_no_shell_true():
    for path in (ROOT / "lipsync").rglob("*.py"):
        assert "shell=True" not in path.read_text(), path


def test_concurrent_runs_in_one_process_do_not_mix(media, tmp_path):
    """Two threads share the engine; each output has its own input's length (no crossed temp files)."""
    import subprocess as sp
    from concurrent.futures import ThreadPoolExecutor

    short = tmp_path / "short.wav"
    sp.run(["espeak-ng", "-w", str(short), "Hi."], check=True, capture_output=True)
    jobs = [(media["speech"], tmp_path / "a.mp4"), (short, tmp_path / "b.mp4")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda job: lipsync.run(media["photo"], job[0], job[1], HAAR), jobs))
    for (speech, out), result in zip(jobs, results):
        assert result.outfile == out.resolve()
        _check_output(out, speech, (512, 512))


def test_a_pictures_split_generator_gives_the_whole_generators_mouths(tmp_path):
    """The still path (face encoder once, decoder per batch) through Paddle Inference equals the generator."""
    from lipsync import runtime

    engine, device = lipsync.Engine(), runtime.Device("cpu", "requested")
    options = LipSyncOptions(device="cpu", precision="fp32")  # the same arithmetic in both (auto may pick bf16)
    whole, split = engine.generator(options, device), engine.still_generator(options, device)
    rng = np.random.default_rng(5)
    mels = rng.uniform(-4, 0, (5, 1, audio.N_MELS, audio.MEL_STEP)).astype(np.float32)
    face = rng.uniform(0, 1, (1, 6, 96, 96)).astype(np.float32)
    features = split.encoder.run(face)
    (got,) = split.decoder.run(mels, *features)
    (expected,) = whole.run(mels, np.repeat(face, len(mels), axis=0))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got[1:] - got[:1]).max() > 1e-3, "the mel windows still choose the mouths"


@pytest.mark.parametrize("face", ["photo", "video"])
def test_two_lanes_drawing_ahead_give_the_frames_of_one_chunk_at_a_time(face, media, tmp_path, monkeypatch):
    """The generator on two lanes with chunks drawn ahead (the CPU default) hands the encoder the frames,
    in order, that one predictor drawing one chunk at a time does (to a level: half a batch may take another
    oneDNN kernel)."""
    from lipsync import engine as engines
    from lipsync import encoding, pipeline, runtime, synth

    options = replace(HAAR, threads=2, precision="fp32")
    depths: list = []
    real_ahead, write = synth.Ahead, encoding.VideoWriter.write
    monkeypatch.setattr(synth, "Ahead", lambda depth: depths.append(depth) or real_ahead(depth))

    def frames_of(lanes: int, ahead: int, out: Path) -> list:
        monkeypatch.setattr(engines, "GENERATOR_LANES", lanes)
        monkeypatch.setattr(synth, "CHUNKS_AHEAD", ahead)
        written: list = []
        monkeypatch.setattr(encoding.VideoWriter, "write", lambda self, frame: (written.append(frame.copy()),
                                                                            write(self, frame))[1])  # fmt: skip
        engine = lipsync.Engine()
        pipeline.run(media[face], media["speech"], out, options, engine=engine)
        cpu = runtime.Device("cpu", "requested")
        generator = engine.still_generator(options, cpu).decoder if face == "photo" else engine.generator(options, cpu)
        assert generator.lanes == lanes
        return written

    alone = frames_of(1, 0, tmp_path / "alone.mp4")
    ahead = frames_of(2, synth.CHUNKS_AHEAD, tmp_path / "ahead.mp4")
    assert depths == [1, 1 + synth.CHUNKS_AHEAD]
    assert len(ahead) == len(alone) > 2 * engines.CPU_GENERATOR_BATCH
    worst = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(ahead, alone))
    assert worst <= 1, f"frames differ by up to {worst} levels: chunks out of order, or another network"


# --- S3FD's weights missing offline: Haar stands in, for every front end -----------------------------

HAAR_NOTE_START = "The S3FD face detector's weights are not available here ("
HAAR_NOTE_END = "), so OpenCV's Haar detector found the faces."


def _s3fd_unavailable() -> str:
    """The conftest's $LIPSYNC_MODELS has no s3fd.pth and the hub is offline: the known name cannot be had."""
    from lipsync import weights
    from lipsync.errors import LipSyncError, first_line

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(LipSyncError) as caught:
        weights.resolve_weights(LipSyncOptions().detector_weights, "s3fd")
    return first_line(caught.value, 400).split(". ")[0].rstrip(".")  # its first sentence


def _is_haar_note(note: str, why: str) -> bool:
    """The fallback note, quoting why S3FD could not be had. The reason after "no network?" depends on
    whether huggingface_hub was imported before HF_HUB_OFFLINE was set (a fresh CLI process vs this one)."""
    said = note[len(HAAR_NOTE_START) : -len(HAAR_NOTE_END)]
    return (note.startswith(HAAR_NOTE_START) and note.endswith(HAAR_NOTE_END)
            and said.split("(no network?")[0] == why.split("(no network?")[0] and "s3fd.pth" in said)  # fmt: skip


def test_api_falls_back_to_haar_with_a_note_when_s3fd_weights_are_unavailable(media, astronaut_bgr, tmp_path):
    why = _s3fd_unavailable()
    out = tmp_path / "fallback.mp4"
    result = lipsync.run(media["photo"], media["speech"], out, LipSyncOptions(device="cpu", precision="fp32"))
    assert len(result.notes) == 1 and _is_haar_note(result.notes[0], why), result.notes
    _check_output(out, media["speech"], (512, 512))
    _face_changed_background_kept(read_video_frames(out)[20], astronaut_bgr)  # Haar found the real face


def test_a_missing_detector_weights_file_stays_an_error(media, tmp_path):
    from lipsync.errors import LipSyncError

    options = LipSyncOptions(device="cpu", detector_weights=str(tmp_path / "my_s3fd.pth"))
    with pytest.raises(LipSyncError, match="No weights file at"):
        lipsync.run(media["photo"], media["speech"], tmp_path / "o.mp4", options)
    assert not (tmp_path / "o.mp4").exists()


def test_cli_falls_back_to_haar_and_prints_the_note(media, tmp_path):
    why = _s3fd_unavailable()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "fallback.mp4"
    proc = run_cli("--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(out), "--cpu",
                   tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines()
             if line.startswith("note: ") and not line.startswith("note: The generator ran in")]  # fmt: skip
    assert len(notes) == 1 and _is_haar_note(notes[0].removeprefix("note: "), why), proc.stderr
    _check_output(out, media["speech"], (512, 512))
    assert list(scratch.iterdir()) == []


def _paddle_major() -> int:
    import paddle

    return int(paddle.__version__.split(".")[0])


needs_paddle_2 = pytest.mark.skipif(_paddle_major() >= 3, reason="face enhancement is refused on paddle 3 (see below)")


def test_face_enhancement_is_refused_on_paddle_3_with_a_clear_error(media, tmp_path, monkeypatch):
    """paddle 3.3.1's Paddle Inference crashed creating GPEN's predictor: a clear error, never a crash."""
    from lipsync import runtime
    from lipsync.errors import LipSyncError

    monkeypatch.setattr(runtime, "paddle_version", lambda: "3.3.1")
    on = replace(HAAR, face_enhancement=True)
    with pytest.raises(LipSyncError, match=r"Face enhancement \(GPEN\) needs paddle 2.6 .*paddle 3.3.1"):
        lipsync.run(media["photo"], media["speech"], tmp_path / "o.mp4", on)
    assert not (tmp_path / "o.mp4").exists()


@pytest.fixture(scope="module")
def small_gpen(tmp_path_factory) -> Path:
    """A random 64-px GPEN: the published layout less its top levels, cheap on a CPU; its size is read back."""
    from lipsync import testing

    return testing.save_random_gpen(tmp_path_factory.mktemp("gpen") / "gpen64.pdparams")


@pytest.fixture(scope="module")
def short_media(media, tmp_path_factory) -> dict:
    """The photo with the speech's first ENHANCED_SECONDS: GPEN runs on every frame, slowly on a CPU."""
    from media_helpers import ffmpeg

    speech = tmp_path_factory.mktemp("short") / "speech.wav"
    ffmpeg("-i", media["speech"], "-t", str(ENHANCED_SECONDS), speech)
    return {**media, "speech": speech}


def _written_frames(monkeypatch, options: LipSyncOptions, media: dict, out: Path) -> list:
    """Run the photo through the API and return copies of the frames handed to the encoder (whole frames: a
    still's canvas region laid over its picture, as ffmpeg does)."""
    from lipsync import encoding

    written, write = [], encoding.VideoWriter.write

    def whole(writer, frame):
        board = writer.canvas
        if board is None:
            return frame.copy()
        picture = np.fromfile(board.picture, np.uint8).reshape(writer.height, writer.width, 3)
        board.region.cut(picture)[...] = frame
        return picture

    monkeypatch.setattr(encoding.VideoWriter, "write", lambda self, frame: (written.append(whole(self, frame)),
                                                                        write(self, frame))[1])  # fmt: skip
    lipsync.run(media["photo"], media["speech"], out, options)
    monkeypatch.undo()
    return written


@needs_paddle_2
def test_face_enhancement_changes_the_masked_lower_face_only_and_feeds_gpen_rgb(short_media, small_gpen, monkeypatch,
                                                                               tmp_path):  # fmt: skip
    from lipsync import facecrop

    media = short_media

    plain = _written_frames(monkeypatch, HAAR, media, tmp_path / "plain.mp4")
    seen_boxes, seen_inputs = [], []
    enhance_frames, network_input = facecrop.enhance_frames, facecrop.network_input

    def record_boxes(frames, boxes, size, run):
        seen_boxes.extend(boxes)
        return enhance_frames(frames, boxes, size, run)

    def record_input(frames, plans, size):
        batch = network_input(frames, plans, size)
        seen_inputs.append((batch.copy(), [facecrop.crop(frame, where).copy() for frame, where in zip(frames, plans)]))
        return batch

    monkeypatch.setattr(facecrop, "enhance_frames", record_boxes)
    monkeypatch.setattr(facecrop, "network_input", record_input)
    on = replace(HAAR, face_enhancement=True, enhancer_weights=str(small_gpen))
    out = tmp_path / "enhanced.mp4"
    enhanced = _written_frames(monkeypatch, on, media, out)
    assert len(enhanced) == len(plain) == len(seen_boxes) > 0
    x1, y1, x2, y2 = (int(v) for v in seen_boxes[0])
    outside = np.ones(plain[0].shape[:2], bool)
    outside[y1:y2, x1:x2] = blend.feather_mask(y2 - y1, x2 - x1) == 0
    for before, after in zip(plain, enhanced):
        np.testing.assert_array_equal(after[outside], before[outside])  # eyes, hair, background: the original's
    mouth = (slice(y1 + (y2 - y1) * 2 // 3, y2 - (y2 - y1) // 10), slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4))
    middle = len(plain) // 2
    assert np.abs(enhanced[middle][mouth].astype(int) - plain[middle][mouth]).mean() > 2, "the mouth was enhanced"
    # Colour order: the network's channel 0 is the crop's red (BGR index 2), channel 2 its blue.
    batch, crops = seen_inputs[0]
    small = [facecrop.resize(crop, batch.shape[-1]) for crop in crops]
    red, blue = np.stack([s[..., 2] for s in small]) / 127.5 - 1, np.stack([s[..., 0] for s in small]) / 127.5 - 1
    np.testing.assert_allclose(batch[: len(small), 0], red, atol=1e-5)
    np.testing.assert_allclose(batch[: len(small), 2], blue, atol=1e-5)
    assert np.abs(red - blue).mean() > 0.1, "the astronaut's face is redder than it is blue: the test can tell"
    _check_output(out, media["speech"], (512, 512))
    assert len(read_video_frames(out)) >= len(enhanced), "the output plays"


@needs_paddle_2
@pytest.mark.parametrize("damage", ["s3fd_file", "truncated"])
def test_bad_enhancer_weights_are_one_error_line_exit_2(damage, media, s3fd_weights, small_gpen, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = s3fd_weights
    if damage == "truncated":
        path = tmp_path / "GPEN-64.pdparams"
        data = small_gpen.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.mp4"
    proc = run_cli("--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(out),
                   "--face_detector", "haar", "--face_enhancement", "--enhancer_weights", str(path),
                   tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("does not match the GPEN model" if damage == "s3fd_file" else "damaged") in lines[0]
    assert not out.exists() and list(scratch.iterdir()) == []


@needs_paddle_2
def test_cli_face_enhancement_says_the_cpu_time_first_and_writes_a_playable_video(short_media, astronaut_bgr,
                                                                                    small_gpen, tmp_path):  # fmt: skip
    media = short_media
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "enhanced.mp4"
    proc = run_cli("--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(out),
                   "--face_detector", "haar", "--face-enhancement", "--enhancer_weights", str(small_gpen),
                   "--cpu", tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: face enhancement on the CPU adds")]
    assert len(notes) == 1 and " faces at ~" in notes[0], proc.stderr
    _check_output(out, media["speech"], (512, 512))
    _face_changed_background_kept(read_video_frames(out)[20], astronaut_bgr)
    assert list(scratch.iterdir()) == []


def test_an_anamorphic_video_speaks_as_wide_as_it_was_shown(media, astronaut_bgr, tmp_path):
    """The photo stored 3/4 as wide with pixels shown 4/3 as wide (as a DVD or an HDV camera stores video): the
    result is shown square again (it came out squeezed: raw frames carry no aspect)."""
    from media_helpers import ffmpeg

    clip = tmp_path / "anamorphic.mp4"
    ffmpeg("-loop", "1", "-i", media["photo"], "-frames:v", "12", "-r", "25", "-vf", "scale=384:512,setsar=4/3",
           "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", clip)  # fmt: skip
    out = tmp_path / "anamorphic-out.mp4"
    lipsync.run(clip, media["speech"], out, HAAR)
    s = _check_output(out, media["speech"], (384, 512))
    assert (s["video"]["sample_aspect_ratio"], s["video"]["display_aspect_ratio"]) == ("4:3", "1:1")


def test_a_slow_motion_video_at_120_frames_a_second_runs_at_60_one_frame_in_two(media, astronaut_bgr, tmp_path):
    """A phone's slow motion (12 frames at 120 frames/s, each marked): the run keeps frames 0, 2, 4, … at 60
    frames/s (it ran at 120: twice the generator's work of 60, 4.8x that of 25), and its notes say so."""
    clip = tmp_path / "slow-motion.mov"  # timed in 1/120 s steps (Matroska's milliseconds would drop others)
    frames = []
    for i in range(12):
        marked = astronaut_bgr.copy()
        marked[:48, :48] = 20 * i
        frames.append(marked)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-video_size", "512x512",
                    "-framerate", "120", "-i", "pipe:0", "-c:v", "libx264rgb", "-qp", "0", str(clip)],
                   input=np.stack(frames).tobytes(), check=True)  # fmt: skip
    out = tmp_path / "slow-motion.mp4"
    result = lipsync.run(clip, media["speech"], out, HAAR)
    assert (result.fps, result.frames) == (60.0, speech_frames(media["speech"], 60.0))
    assert any("is 120 frames/s: it runs at 60, one frame in 2" in note for note in result.notes)
    assert _check_output(out, media["speech"], (512, 512))["video"]["avg_frame_rate"] == "60/1"
    marks = np.rint(read_video_frames(out)[:, 8:40, 8:40].mean(axis=(1, 2, 3)) / 20).astype(int)
    assert set(marks.tolist()) == {0, 2, 4, 6, 8, 10}, f"every other frame, all of them: {marks[:12]}"


def test_speech_that_starts_after_its_file_stays_with_the_mouth(media, tmp_path):
    """A video whose sound begins 0.5 s after its picture, given as the speech: the result's sound starts at 0 with
    that lead as silence, and lasts as long as the frames drawn for it (the track kept its 0.4 s offset while the
    mouth was drawn from its first sample: out of sync, and its end cut off)."""
    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=size=64x64:rate=25:duration=1",
                    "-itsoffset", "0.5", "-i", str(media["speech"]), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
                    "-c:a", "aac", str(late)], check=True)  # fmt: skip
    out = tmp_path / "late-out.mp4"
    result = lipsync.run(media["photo"], late, out, HAAR)
    seconds = speech_seconds(media["speech"]) + 0.5
    assert result.frames == audio.frame_count(audio.melspectrogram(audio.load_audio(late)).shape[1], 25)
    sound = _streams(out)["audio"]
    assert float(sound["start_time"]) == 0 and abs(float(sound["duration"]) - seconds) <= FRAME_TOLERANCE_S
    heard = audio.load_audio(out)
    assert np.abs(heard[: int(0.45 * audio.SAMPLE_RATE)]).max() < 0.01 < np.abs(heard).max()
