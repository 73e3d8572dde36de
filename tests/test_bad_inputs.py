"""Bad and awkward inputs, each through the Python API and the CLI: a correct video, or our one clear error.

Every case ends one of two ways. A video: H.264 yuv420p + AAC, even dimensions, as long as the speech
(checked with ffprobe). Or a LipSyncError whose message says what to do; on the command line that is one
`error: …` line on stderr, exit code 2, no traceback, no output file and nothing left in the temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np
import pytest
from conftest import ROOT, ffprobe, read_video_frames

import lipsync
from lipsync import audio
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

HAAR = {"face_detector": "haar", "device": "cpu"}  # random S3FD weights find no face; Haar finds real ones
AV_TOLERANCE_S = 1 / 25 + 0.05  # output vs speech: one frame, plus AAC's block granularity
LONG_MINUTES = 10
LONG_RATE = 16000  # Hz: the long speech's AAC is made 5x faster than at espeak-ng's 22050 Hz (6 s, not 30)
LONG_FPS = 0.25  # a frame every 4 s: 150 frames, so 10 minutes of speech is a CI-sized job
SHORT_SPEECH = "Hello there."
VIDEO_FPS = 25


@dataclass(frozen=True)
class Case:
    """One input to try: how to make it, and the error it must give (None: it must make a correct video)."""

    name: str
    make: Callable[["Inputs"], Dict[str, object]]  # → {"face": path, "audio": path, …}
    error: Optional[str] = None
    check: Optional[Callable[[Path, Dict[str, object]], None]] = None  # extra checks of a made video
    options: Dict[str, object] = field(default_factory=dict)
    out: Callable[[Inputs, Path], Path] = lambda inputs, tmp: tmp / "out" / "result.mp4"


# ---------------------------------------------------------------- the inputs, made once


class Inputs:
    """Makes each bad or awkward file on first use, in one folder shared by the module's tests."""

    def __init__(self, folder: Path, media: dict, photo_bgr: np.ndarray):
        self.folder, self.media, self.photo_bgr = folder, media, photo_bgr
        self._made: Dict[str, Path] = {}

    def file(self, name: str, make: Callable[[Path], None]) -> Path:
        if name not in self._made:
            path = self.folder / name
            make(path)
            self._made[name] = path
        return self._made[name]

    def picture(self, name: str, image: np.ndarray) -> Path:
        return self.file(name, lambda path: _imwrite(path, image))

    def copy(self, name: str, source: Path) -> Path:
        return self.file(name, lambda path: shutil.copyfile(source, path))

    def truncated(self, name: str, source: Path, keep: float = 0.5) -> Path:
        data = source.read_bytes()
        return self.file(name, lambda path: path.write_bytes(data[: int(len(data) * keep)]))

    def ffmpeg(self, name: str, *args: str) -> Path:
        return self.file(name, lambda path: _ffmpeg(*args, f"file:{path}"))

    @property
    def photo(self) -> Path:
        return self.media["photo"]

    @property
    def speech(self) -> Path:
        """A short sentence (about a second): the cases test handling, not length."""
        return self.file("hello.wav", lambda path: subprocess.run(["espeak-ng", "-w", str(path), SHORT_SPEECH],
                                                                   check=True, capture_output=True))

    @property
    def clip(self) -> Path:
        return self.media["video"]


def _imwrite(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    data.tofile(str(path))  # cv2.imwrite cannot open every unicode path


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def two_faces(photo: np.ndarray) -> np.ndarray:
    """The photo with a half-size copy of itself beside it, on white: two faces, the left one larger."""
    canvas = np.full((512, 1024, 3), 255, np.uint8)
    canvas[:, :512] = photo
    canvas[128:384, 640:896] = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    return canvas


def _small_face(photo: np.ndarray) -> np.ndarray:
    """A 900×900 grey picture with the face shrunk to 20 px: too small for any detector."""
    canvas = np.full((900, 900, 3), 128, np.uint8)
    canvas[440:460, 440:460] = cv2.resize(photo[60:260, 150:290], (20, 20), interpolation=cv2.INTER_AREA)
    return canvas


def _rotated_phone_clip(inputs: Inputs) -> Path:
    """A phone clip: frames stored sideways, with rotation metadata saying to turn them upright."""
    sideways = inputs.picture("sideways.png", cv2.rotate(inputs.photo_bgr[:, 64:448], cv2.ROTATE_90_CLOCKWISE))
    stored = inputs.ffmpeg("stored.mp4", "-loop", "1", "-i", f"file:{sideways}", "-t", "1.2", "-r", str(VIDEO_FPS),
                           "-c:v", "libx264", "-pix_fmt", "yuv420p")  # fmt: skip
    return inputs.ffmpeg("phone.mp4", "-i", f"file:{stored}", "-c", "copy", "-metadata:s:v", "rotate=90")


def _vfr_clip(inputs: Inputs) -> Path:
    """Frames at irregular times (variable frame rate), as phones and screen recorders write them."""
    return inputs.ffmpeg("vfr.mp4", "-loop", "1", "-i", f"file:{inputs.photo}", "-t", "1.5", "-r", str(VIDEO_FPS),
                         "-vf", "setpts='PTS+0.03*sin(N)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                         "-pix_fmt", "yuv420p")  # fmt: skip


def _surround(inputs: Inputs) -> Path:
    layout = "pan=7.1|" + "|".join(f"c{i}=c0" for i in range(8))
    return inputs.ffmpeg("surround.wav", "-i", f"file:{inputs.speech}", "-ar", "96000", "-af", layout)


def _long_speech(inputs: Inputs) -> Path:
    return inputs.ffmpeg("long.m4a", "-stream_loop", "-1", "-i", f"file:{inputs.speech}", "-t", str(LONG_MINUTES * 60),
                         "-ar", str(LONG_RATE), "-c:a", "aac")  # fmt: skip


# ---------------------------------------------------------------- extra checks of made videos


def _size(width: int, height: int) -> Callable[[Path, dict], None]:
    def check(out: Path, made: dict) -> None:
        video = next(s for s in ffprobe(out)["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (width, height)

    return check


def _left_face_speaks(out: Path, made: dict) -> None:
    """With two faces the larger (left) one is lip-synced; the small one is left as it was."""
    frame = read_video_frames(out)[10].astype(int)
    original = two_faces(made["photo_bgr"]).astype(int)  # type: ignore[arg-type]
    left_mouth, right_face = (slice(150, 220), slice(185, 255)), (slice(160, 290), slice(700, 830))
    assert np.abs(frame[left_mouth] - original[left_mouth]).mean() > 15
    assert np.abs(frame[right_face] - original[right_face]).mean() < 4


def _stereo_48k(out: Path, made: dict) -> None:
    sound = next(s for s in ffprobe(out)["streams"] if s["codec_type"] == "audio")
    assert (sound["channels"], int(sound["sample_rate"])) == (2, 48000)


# ---------------------------------------------------------------- the table


def _media(face: Callable[[Inputs], Path] = lambda i: i.photo, speech: Callable[[Inputs], Path] = lambda i: i.speech,
           **extra: Callable[[Inputs], object]) -> Callable[[Inputs], Dict[str, object]]:
    def make(inputs: Inputs) -> Dict[str, object]:
        return {"face": face(inputs), "audio": speech(inputs), **{k: v(inputs) for k, v in extra.items()}}

    return make


NAMES = {"spaces": "my face photo.png", "unicode": "лицо 顔 ünïcode.png", "dots": "v1.2.final.face.png",
         "leading_dash": "-face.png", "uppercase": "FACE.PNG"}  # fmt: skip

CASES = [
    Case("empty_face", _media(face=lambda i: i.file("empty.png", lambda p: p.write_bytes(b""))), "is empty (0 bytes)"),
    Case("empty_audio", _media(speech=lambda i: i.file("empty.wav", lambda p: p.write_bytes(b""))), "is empty (0 bytes)"),
    Case("truncated_mp4", _media(face=lambda i: i.truncated("cut.mp4", i.clip)), "cannot be read as a picture or a video"),
    Case("truncated_png", _media(face=lambda i: i.truncated("cut.png", i.photo, 0.1)), "could not decode the picture"),
    Case("truncated_mp3", _media(speech=lambda i: i.truncated("cut.mp3", i.ffmpeg("speech.mp3", "-i", str(i.speech))))),
    Case("corrupt_mp3", _media(speech=lambda i: i.file("noise.mp3", lambda p: p.write_bytes(os.urandom(6000)))),
         "could not decode the audio in noise.mp3"),
    Case("text_as_mp4", _media(face=lambda i: i.file("notes.mp4", lambda p: p.write_text("not a video\n" * 40))),
         "notes.mp4 cannot be read as a picture or a video"),
    Case("url_face", _media(face=lambda i: "https://example.com/face.jpg"),
         "the face https://example.com/face.jpg is a web address"),
    Case("no_face", _media(face=lambda i: i.picture("wall.png", np.full((360, 480, 3), 90, np.uint8))), "No face found"),
    Case("face_too_small", _media(face=lambda i: i.picture("far.png", _small_face(i.photo_bgr))), "No face found"),
    Case("several_faces", _media(face=lambda i: i.picture("two.png", two_faces(i.photo_bgr)),
                                 photo_bgr=lambda i: i.photo_bgr), check=_left_face_speaks),
    Case("cartoon", _media(face=lambda i: ROOT / "examples" / "cartoon.png")),
    Case("one_pixel", _media(face=lambda i: i.picture("dot.png", np.zeros((1, 1, 3), np.uint8))),
         "is only 1×1 px: too small to hold a face"),
    Case("huge_8000", _media(face=lambda i: i.picture("poster.jpg", cv2.resize(i.photo_bgr, (8000, 8000))),
                             speech=lambda i: i.ffmpeg("half.wav", "-i", str(i.speech), "-t", "0.5")),
         check=_size(2880, 2880)),
    Case("odd_size", _media(face=lambda i: i.picture("odd.png", cv2.resize(i.photo_bgr, (301, 257)))),
         check=_size(302, 258)),
    Case("rgba_png", _media(face=lambda i: i.picture("cutout.png", np.dstack([i.photo_bgr, np.full((512, 512), 180, np.uint8)])))),
    Case("greyscale_png", _media(face=lambda i: i.picture("grey.png", cv2.cvtColor(i.photo_bgr, cv2.COLOR_BGR2GRAY)))),
    Case("png_16_bit", _media(face=lambda i: i.picture("deep.png", i.photo_bgr.astype(np.uint16) * 257))),
    Case("cmyk_jpeg", _media(face=lambda i: i.file("cmyk.jpg", lambda p: _cmyk_jpeg(i.photo_bgr, p)))),
    Case("rotated_phone_video", _media(face=_rotated_phone_clip), check=_size(384, 512)),
    Case("variable_frame_rate", _media(face=_vfr_clip)),
    Case("audio_only_as_face", _media(face=lambda i: i.ffmpeg("voice.m4a", "-i", str(i.speech))), "has no video stream"),
    Case("video_without_audio", _media(speech=lambda i: i.clip), "has no audio track"),
    Case("silent_audio", _media(speech=lambda i: i.ffmpeg("silence.wav", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                                                            "-t", "2"))),
    Case("audio_0.1s", _media(speech=lambda i: i.ffmpeg("blip.wav", "-i", str(i.speech), "-t", "0.1"))),
    Case("audio_10_minutes", _media(speech=_long_speech), options={"fps": LONG_FPS}),
    Case("audio_8ch_96khz", _media(speech=_surround), check=_stereo_48k),
    *[Case(f"name_{kind}", _media(face=lambda i, n=name: i.copy(n, i.photo))) for kind, name in NAMES.items()],
    *[Case(f"video_{ext}", _media(face=lambda i, e=ext: i.ffmpeg(f"clip.{e}", "-i", str(i.clip), "-t", "1")))
      for ext in ("MOV", "webm", "mkv", "avi")],
    Case("output_in_missing_folder", _media(), out=lambda i, tmp: tmp / "new" / "deeper" / "out.mp4"),
    Case("output_is_the_input", _media(face=lambda i: i.copy("same.mp4", i.clip)), "is the face input",
         out=lambda i, tmp: i.folder / "same.mp4"),
    # geometry: what the pads, resize factor, crop and box leave, checked before the generator runs
    Case("pads_leave_nothing", _media(), "--pads 0 -200 0 0 leave nothing of the face box",
         options={"pads": (0, -200, 0, 0)}),
    Case("resize_to_nothing", _media(), "--resize_factor 1000 shrinks the 512×512 px frames of astronaut.png",
         options={"resize_factor": 1000}),
    Case("crop_outside_frame", _media(face=lambda i: i.clip), "--crop 600 -1 0 -1 does not fit the 256×256 px frame",
         options={"crop": (600, -1, 0, -1), "resize_factor": 2}),
    Case("box_outside_frame", _media(), "--box 600 700 0 100 lies outside the 512×512 px frame",
         options={"box": (600, 700, 0, 100)}),
]
GEOMETRY_OPTIONS = ("pads", "resize_factor", "crop", "box")  # passed on the command line when a case sets them


def _cmyk_jpeg(bgr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(bgr[..., ::-1]).convert("CMYK").save(path, "JPEG")


@pytest.fixture(scope="module")
def inputs(media, astronaut_bgr, tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("bad inputs"), media, astronaut_bgr)


# ---------------------------------------------------------------- running a case


def _job(case: Case, inputs: Inputs, tmp_path: Path) -> Tuple[Dict[str, object], Path, LipSyncOptions]:
    return case.make(inputs), case.out(inputs, tmp_path), LipSyncOptions(**{**HAAR, **case.options})


def _check_video(out: Path, made: Dict[str, object], case: Case) -> None:
    info = ffprobe(out)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["video"]["width"] % 2 == 0 and streams["video"]["height"] % 2 == 0
    speech_s = len(audio.load_audio(made["audio"])) / audio.SAMPLE_RATE  # type: ignore[arg-type]
    assert abs(float(info["format"]["duration"]) - speech_s) <= AV_TOLERANCE_S, "the video lasts as long as the speech"
    if case.check is not None:
        case.check(out, made)


def _snapshot(folder: Path) -> Dict[Path, Tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_python_api(case: Case, inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made, out, options = _job(case, inputs, tmp_path)
    before = _snapshot(inputs.folder)
    monkeypatch.chdir(inputs.folder)  # relative names: "-face.png" must stay a file name for ffmpeg
    face = Path(made["face"]).name if case.name == "name_leading_dash" else made["face"]  # type: ignore[arg-type]
    if case.error is None:
        result = lipsync.run(face, made["audio"], out, options)  # type: ignore[arg-type]
        assert result.outfile == out.resolve() and result.frames >= 1
        _check_video(out, made, case)
        out.unlink()
    else:
        with pytest.raises(LipSyncError, match=_literal(case.error)) as caught:
            lipsync.run(face, made["audio"], out, options)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value), "one line"
        assert _snapshot(inputs.folder) == before, "the inputs are untouched and nothing was added beside them"
        assert not out.parent.exists() or out in before or not list(out.parent.iterdir())


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def run_cli(args: list, tmpdir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lipsync", *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_command_line(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    made, out, options = _job(case, inputs, tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    face = f"--face={Path(made['face']).name}" if case.name == "name_leading_dash" else f"--face={made['face']}"
    args = [face, f"--audio={made['audio']}", f"--outfile={out}", "--face_detector", options.face_detector,
            "--device", options.device, "--fps", str(options.fps), "--quiet", *_geometry_args(case)]  # fmt: skip
    before = _snapshot(inputs.folder)
    proc = run_cli(args, scratch, cwd=inputs.folder)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert list(scratch.iterdir()) == [], "the run's temp files are gone"
    if case.error is None:
        assert proc.returncode == 0, proc.stderr
        _check_video(out, made, case)
        out.unlink()
    else:
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and case.error in lines[0], proc.stderr
        assert _snapshot(inputs.folder) == before, "the inputs are untouched and nothing was added beside them"
        assert not out.exists() or out in before, "no output, or only the untouched input of the same name"


def _geometry_args(case: Case) -> list:
    args = []
    for name in GEOMETRY_OPTIONS:
        if name in case.options:
            value = case.options[name]
            args += [f"--{name}", *map(str, value if isinstance(value, tuple) else (value,))]
    return args


def test_the_table_covers_what_the_issue_lists():
    names = {c.name for c in CASES}
    assert len(CASES) >= 24 and len(names) == len(CASES)
    assert sum(c.error is None for c in CASES) >= 12 and sum(c.error is not None for c in CASES) >= 10


# ---------------------------------------------------------------- a representative subset through the running app

# case → what the page must show: None for a video, else a piece of the error the visitor reads.
APP_CASES = {
    "empty_face": "is empty (0 bytes)",
    "truncated_png": "could not decode the picture",
    "text_as_mp4": "cannot be read as a picture or a video",
    "no_face": "No face found",
    "one_pixel": "too small to hold a face",
    "several_faces": None,
    "cmyk_jpeg": None,
    "rgba_png": None,
    "rotated_phone_video": None,
    "silent_audio": None,
    "audio_0.1s": None,
    "audio_8ch_96khz": None,
    "audio_10_minutes": "this app accepts up to 60 s",  # allowed on the command line, limited here
    "video_without_audio": "has no audio track",
    "name_unicode": None,
}
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")


@pytest.fixture(scope="module")
def app_client(isolated_weights, tmp_path_factory):
    from gradio_client import Client
    from test_app import launch_app

    server = launch_app(tmp_path_factory.mktemp("app"))  # the app's default limits
    yield Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")),
                 analytics_enabled=False)  # fmt: skip
    server.stop()


@pytest.mark.parametrize("name", list(APP_CASES))
def test_through_the_app(name: str, inputs: Inputs, app_client) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    case = next(c for c in CASES if c.name == name)
    made = case.make(inputs)
    face = Path(made["face"])  # type: ignore[arg-type]
    slot = "face_video" if face.suffix.lower() in VIDEO_SUFFIXES else "face_image"
    args = {slot: handle_file(str(face)), "audio": handle_file(str(made["audio"])), "detector": "haar"}
    expected = APP_CASES[name]
    if expected is not None:
        with pytest.raises(AppError, match=_literal(expected)):
            app_client.predict(**args, api_name="/lipsync")
        return
    video, _, status = app_client.predict(**args, api_name="/lipsync")
    _check_video(Path(video), made, case)
    assert "faces: haar" in status
