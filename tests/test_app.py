"""The Gradio app: `python app.py` on localhost driven end to end with gradio_client, and the page's events.

The webapp package's parts are tested in-process in tests/test_webapp.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest
from conftest import ROOT, ffprobe, free_port, heic_copy, media_seconds, refused_proxy
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from lipsync import cuda, runtime

sys.path.insert(0, str(ROOT))  # app.py lives at the repository root
import app  # noqa: E402
from webapp import folders  # noqa: E402

STARTUP_TIMEOUT_S = 180
MAX_SECONDS = 5  # the test server's LIPSYNC_MAX_SECONDS
TOO_LONG = f"lasts {MAX_SECONDS + 2}.0 s; this app accepts up to {MAX_SECONDS} s"
MAX_UPLOAD_MB = 1  # the test server's LIPSYNC_MAX_UPLOAD_MB
AV_TOLERANCE_S = 0.12  # output vs speech duration: a frame plus AAC padding


# ---------------------------------------------------------------- a server like `python app.py`


@dataclass
class AppServer:
    """`python app.py` in a subprocess with its own cwd and temp dir; edge-tts can only reach a refused proxy."""

    url: str
    process: subprocess.Popen
    cwd: Path
    tmp: Path
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_env(base: Path, **extra: str) -> dict:
    refused = refused_proxy()
    env = dict(os.environ, TMPDIR=str(base / "tmp"), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(free_port()), GRADIO_ANALYTICS_ENABLED="False", HTTPS_PROXY=refused,
               WSS_PROXY=refused, https_proxy=refused, wss_proxy=refused, NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")  # fmt: skip
    env.pop("GRADIO_TEMP_DIR", None)
    env.update(extra)
    return env


def launch_app(base: Path, **extra_env: str) -> AppServer:
    """Start app.py as a user would and wait until its page answers."""
    for sub in ("cwd", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = server_env(base, **extra_env)
    log = base / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=base / "cwd", env=env,
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    server = AppServer(f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/", process, base / "cwd", base / "tmp", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"app.py did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(isolated_weights, tmp_path_factory):
    running = launch_app(tmp_path_factory.mktemp("app"), LIPSYNC_MAX_SECONDS=str(MAX_SECONDS),
                         LIPSYNC_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB))  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")),
                  analytics_enabled=False)  # fmt: skip


@pytest.fixture(scope="module")
def voice_files(tmp_path_factory) -> dict:
    """A short espeak-ng sentence, a tone longer than the server accepts, a faceless picture, a big file."""
    folder = tmp_path_factory.mktemp("voice")
    files = {"hello": folder / "hello.wav", "long": folder / "long.wav", "blank": folder / "blank.png",
             "big": folder / "big.wav"}  # fmt: skip
    subprocess.run(["espeak-ng", "-w", str(files["hello"]), "Hello there."], check=True, capture_output=True)
    _tone(files["long"], MAX_SECONDS + 2, rate=8000)
    _tone(files["big"], 40, rate=16000)  # 1.28 MB of PCM: over the 1 MB upload limit
    cv2.imwrite(str(files["blank"]), np.full((256, 256, 3), 128, np.uint8))
    return files


def _tone(path: Path, seconds: float, rate: int) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=220:duration={seconds}:sample_rate={rate}", "-ac", "1", f"file:{path}"],
                   check=True)  # fmt: skip


def _check_video(path: str, speech: Path, size: tuple) -> None:
    """Browser-playable H.264 + AAC of the face's size, as long as the speech."""
    info = ffprobe(Path(path))
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == size
    assert abs(float(info["format"]["duration"]) - media_seconds(speech)) <= AV_TOLERANCE_S


# ---------------------------------------------------------------- end to end through gradio_client


def test_photo_and_audio_make_a_talking_video(client, media, voice_files):
    photo, hello = handle_file(str(media["photo"])), handle_file(str(voice_files["hello"]))
    video, speech, status = client.predict(face_image=photo, audio=hello, api_name="/lipsync")
    _check_video(video, voice_files["hello"], (512, 512))
    assert speech is None  # the voice was a file: nothing was synthesized
    # no S3FD weights offline: Haar found the face, and the status line says what ran
    assert status.startswith("wav2lip_hq on cpu") and f"paddle {runtime.paddle_version()}" in status
    assert "faces: haar" in status
    frames = int(re.search(r"(\d+) frames at 25 fps", status).group(1))
    hello_s = media_seconds(voice_files["hello"])
    assert 0.75 * hello_s * 25 < frames <= hello_s * 25 + 1  # mel windows


def test_an_iphone_s_heic_photo_speaks(client, media, voice_files, tmp_path):
    """gradio opens an uploaded picture with PIL before lipsync sees it: PIL must know HEIC by then."""
    heic = heic_copy(media["photo"], tmp_path)
    video, _, status = client.predict(face_image=handle_file(str(heic)), audio=handle_file(str(voice_files["hello"])),
                                      api_name="/lipsync")  # fmt: skip
    _check_video(video, voice_files["hello"], (512, 512))
    assert "faces: haar" in status


def test_the_stream_endpoint_hands_over_segments_while_it_works_then_the_mp4(client, media):
    """/lipsync_stream (the page's button): each segment comes as an update of the result's playlist, before the
    job ends; the last update brings the complete mp4 to download and the status line."""
    job = client.submit(face_image=handle_file(str(media["photo"])), audio=handle_file(str(media["speech"])),
                        api_name="/lipsync_stream")  # fmt: skip
    _, mp4, speech, status = job.result()
    streamed = [out[0] for out in job.outputs() if isinstance(out[0], str)]  # the playlist, downloaded each time
    listed = [Path(playlist).read_text().count(".ts\n") for playlist in streamed]
    assert len(streamed) > 1 and listed == list(range(1, len(streamed) + 1)), listed  # one more segment each time
    assert job.outputs()[-1][0] == {"__type__": "update"} and mp4["visible"] is True
    _check_video(mp4["value"], media["speech"], (512, 512))
    assert speech is None and status.startswith("wav2lip_hq on cpu") and "faces: haar" in status
    assert listed[-1] == int(media_seconds(media["speech"])) + 1, "a segment a second, the last one shorter"


def readme_block(marker: str) -> str:
    """The code inside README's fenced block between <!-- marker --> and <!-- /marker -->."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker} -->\n", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    return block.split("```", 2)[1].split("\n", 1)[1]


def test_readme_api_snippet_speaks_typed_text_offline(server, tmp_path, monkeypatch):
    """README's gradio_client snippet, run as written against the local server (typed text → espeak-ng)."""
    code = readme_block("api-snippet")
    placeholder = 'Client("your-name/lipsync")'
    assert placeholder in code
    local = f"Client({server.url!r}, download_files={str(tmp_path)!r}, analytics_enabled=False, verbose=False)"
    monkeypatch.chdir(ROOT)  # the snippet names examples/cartoon.png
    scope: dict = {}
    exec(compile(code.replace(placeholder, local), "README.md:api-snippet", "exec"), scope)
    speech, status = Path(scope["speech"]), scope["status"]
    assert speech.suffix == ".wav" and "voice: espeak-ng en-us" in status and "faces: haar" in status
    _check_video(scope["video"], speech, (512, 512))


def test_preview_endpoint_speaks_the_text(client):
    speech, status = client.predict(text="Testing the voice.", voice="de-DE-KatjaNeural", rate=-20, api_name="/speak")
    assert status == "voice: espeak-ng de" and media_seconds(Path(speech)) > 0.5


def test_the_api_documents_voice_as_any_voice_name(client):
    """The page starts with a few en-US voices; the API takes any edge-tts voice and must say so, not list six."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/lipsync", "/speak"):
        [voice] = [p for p in endpoints[name]["parameters"] if p["parameter_name"] == "voice"]
        assert voice["python_type"]["type"] == "str" and "enum" not in voice["type"]
        assert "any edge-tts voice" in voice["python_type"]["description"]
        assert re.match(voice["type"]["pattern"], "de-DE-KatjaNeural")


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"audio": "hello"}, "Give a face"),
        ({"face_image": "blank", "audio": "hello"}, "No face found"),
        ({"face_image": "blank", "audio": "long"}, TOO_LONG),
        ({"face_image": "blank", "text": "x" * 1001}, "speaks up to 1000"),
        ({"face_image": "blank", "audio": "hello", "box": "1 2 3"}, "four whole numbers"),
        ({"face_image": "photo", "audio": "hello", "face_index": 2}, "only 1 face was found"),
    ],
)
def test_mistakes_reach_the_user_as_their_message(client, voice_files, media, inputs, message):
    files = {**voice_files, "photo": media["photo"]}
    args = {k: handle_file(str(files[v])) if k in ("face_image", "audio") else v for k, v in inputs.items()}
    with pytest.raises(AppError, match=message):
        client.predict(**args, api_name="/lipsync")


def test_uploads_over_the_size_limit_are_refused(client, server, media, voice_files):
    """The client reads the limit from the app's config; the server refuses the upload itself too (HTTP 413)."""
    import httpx

    big = voice_files["big"]
    assert big.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        client.predict(face_image=handle_file(str(media["photo"])), audio=handle_file(str(big)), api_name="/lipsync")
    for path, status in ((big, 413), (voice_files["hello"], 200)):
        with path.open("rb") as file:
            answer = httpx.post(f"{server.url}gradio_api/upload", files={"files": (path.name, file)}, trust_env=False)
        assert answer.status_code == status


def test_nothing_is_written_to_the_working_directory(client, server):
    client.predict(text="One more.", api_name="/speak")
    assert not list(server.cwd.iterdir())
    requests = list((server.tmp / "lipsync-app").glob(f"{folders.REQUEST_PREFIX}*"))
    assert requests, "each request works in its own folder under the temp dir"


def test_a_stopped_server_exits_quietly_after_a_job(tmp_path, media, voice_files):
    """Once a job loaded paddle, its C++ handler printed a 'FatalError: Termination signal' block on SIGTERM."""
    running = launch_app(tmp_path)
    try:
        client = Client(running.url, verbose=False, download_files=str(tmp_path / "downloads"),
                        analytics_enabled=False)  # fmt: skip
        client.predict(face_image=handle_file(str(media["photo"])), audio=handle_file(str(voice_files["hello"])),
                       api_name="/lipsync")  # fmt: skip
    finally:
        running.stop()
    log = running.log.read_text()
    assert running.process.returncode == -signal.SIGTERM
    assert "Termination signal" not in log and "FatalError" not in log and "Traceback" not in log, log


def _fake_cuda_wheel(site: Path) -> Path:
    """A site folder holding what nvidia-cudnn-cu11 installs (an empty file stands in for the library)."""
    lib = site / "nvidia" / "cudnn" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudnn.so.8").write_bytes(b"\x7fELF")
    return site


def test_python_app_py_restarts_for_cuda_before_it_imports_gradio(tmp_path):
    """With CUDA wheels to link, `python app.py` restarts first thing: gradio is imported, the UI built, once."""
    site = _fake_cuda_wheel(tmp_path / "site")
    env = {"PYTHONPATH": str(site), "PYTHONPROFILEIMPORTTIME": "1", cuda.LIBRARY_PATH_ENV: "", cuda.REEXEC_ENV: "",
           cuda.DISABLE_ENV: ""}  # fmt: skip
    running = launch_app(tmp_path, **env)
    running.stop()
    lines = running.log.read_text().splitlines()
    imported = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
    assert imported.count("lipsync.cuda") == 2  # once before the restart, once after
    assert imported.count("gradio") == 1


# ---------------------------------------------------------------- examples and events


def _component(name: str) -> int:
    """The id of the one component with this elem_id or label."""
    props = {c["id"]: c["props"] for c in app.demo.config["components"]}
    [found] = [i for i, p in props.items() if name in (p.get("elem_id"), p.get("label"))]
    return found


def _dependency(api_name: str) -> dict:
    [found] = [d for d in app.demo.config["dependencies"] if d["api_name"] == api_name]
    return found


def test_every_event_that_runs_the_networks_shares_the_gpu_group():
    """'Make it speak' and an example's first click both write the result, /lipsync the API's: one job at a time
    on the GPU."""
    result = _component("result")
    runs = [d["id"] for d in app.demo.config["dependencies"] if result in d["outputs"]]
    runs.append(_dependency("lipsync")["id"])
    assert len(set(runs)) == 3 and _dependency("lipsync_stream")["id"] in runs
    assert {app.demo.fns[run].concurrency_id for run in runs} == {app.GPU_GROUP}


def test_the_sharpen_checkbox_and_then_the_face_index_are_the_lipsync_endpoints_last_inputs():
    """GPEN is off by default; the page's checkbox and the API's `face_enhancement`, then the face picker's
    `face_index` (none: the most confident face), are make_video's last inputs (appended: positional API calls
    written before them keep working)."""
    import inspect

    sharpen, index = _component("sharpen"), _component("face-index")
    props = {c["id"]: c["props"] for c in app.demo.config["components"]}
    assert props[sharpen]["label"] == "Sharpen the face (GPEN)" and props[sharpen]["value"] is False
    assert props[index].get("value") is None and props[index]["visible"] == "hidden"
    assert _dependency("lipsync")["inputs"][-2:] == [sharpen, index]
    names = list(inspect.signature(app.make_video).parameters)
    assert names[names.index("device") + 1 :][:2] == ["face_enhancement", "face_index"]


def test_the_voice_preview_runs_in_its_own_bounded_group():
    """/speak must not start a thread per request (concurrency_limit=None did): its own small group."""
    speak = app.demo.fns[_dependency("speak")["id"]]
    assert speak.concurrency_id == app.SPEECH_GROUP != app.GPU_GROUP
    assert isinstance(speak.concurrency_limit, int) and 1 <= speak.concurrency_limit <= app.SPEECH_CONCURRENCY
    queued = [fn for fn in app.demo.fns.values() if fn.queue]
    assert all(fn.concurrency_limit is not None for fn in queued), "every queued event has a bound"


def test_a_click_on_an_example_fills_the_form_but_not_the_advanced_options():
    """The visitor's next own run keeps the default options (the cartoon's Haar detector stays the example's)."""
    dependencies = app.demo.config["dependencies"]
    [dataset] = [c["id"] for c in app.demo.config["components"] if c["type"] == "dataset"]
    chain = {d["id"] for d in dependencies if [dataset, "click"] in [list(t) for t in d["targets"]]}
    while later := {d["id"] for d in dependencies if d["trigger_after"] in chain} - chain:
        chain |= later
    written = {o for d in dependencies if d["id"] in chain for o in d["outputs"]}
    assert {_component(name) for name in ("face-image", "face-video", "audio", "text", "result")} <= written
    inputs = _dependency("lipsync")["inputs"]
    advanced = set(inputs[inputs.index(_component("Model")) + 1 :])  # make_video's options after the model
    assert _component("Face detector") in advanced and not written & advanced


# ---------------------------------------------------------------- what the Space is made of


def test_importing_the_app_loads_no_model():
    code = "import sys, app; print(sorted(m for m in ('paddle', 'lipsync.pipeline', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
                         env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert not (ROOT / "app.pyi").exists()  # gradio writes one beside the file of any Component subclass
    assert app.demo.config["dependencies"] and {"lipsync", "speak"} <= {
        d.get("api_name") for d in app.demo.config["dependencies"]
    }


def test_examples_are_small_and_shipped():
    names = {"cartoon.png", "astronaut.jpg", "astronaut.mp3", "clip.mp4", "clip.mp3"}
    files = {p.name: p for p in (ROOT / "examples").iterdir()}
    assert names <= set(files)
    assert sum(p.stat().st_size for p in files.values()) < 3 * 1024 * 1024
    assert shutil.which("ffprobe") and ffprobe(files["clip.mp4"])["streams"][0]["codec_name"] == "h264"


def test_space_front_matter_matches_the_code():
    import yaml

    from lipsync.weights import WAV2LIP_HUB_REPO, WEIGHTS

    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gr.__version__  # = requirements-dev.txt's pin
    assert (ROOT / meta["app_file"]).is_file() and meta["title"] and meta["emoji"]
    assert len(meta["short_description"]) <= 60 and meta["python_version"] == "3.11"
    hub_files = {e.hub.path for e in WEIGHTS.values() if e.hub is not None and e.hub.repo_id == WAV2LIP_HUB_REPO}
    [preload] = meta["preload_from_hub"]
    repo, files = preload.split()
    assert repo == WAV2LIP_HUB_REPO and set(files.split(",")) == hub_files and repo in meta["models"]


def test_the_space_gets_the_same_edge_tts_and_no_gradio():
    def pins(name: str) -> dict:
        lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
        requirements = [line for line in lines if line and not line.startswith("-")]
        return {re.split(r"[=<>~!]", line)[0].lower().replace("_", "-"): line for line in requirements}

    space, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert space["edge-tts"] == dev["edge-tts"]
    assert "gradio" not in space and "gradio-client" not in space  # Spaces preinstall gradio at sdk_version


