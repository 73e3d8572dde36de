"""`python -m lipsync --doctor`: one line per thing a job depends on, to paste into a bug report."""

from __future__ import annotations

import importlib.metadata
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from . import cuda

if TYPE_CHECKING:
    from .weights import WeightsStatus

LABEL_WIDTH = 15
TOOL_TIMEOUT_S = 10  # for `ffmpeg -version` and friends
EDGE_TTS_HOST = "speech.platform.bing.com"  # edge-tts's service (its constants.WSS_URL)
EDGE_TTS_PORT = 443
EDGE_TTS_TIMEOUT_S = 3.0  # a connection attempt, name lookup included; offline must not hang the doctor
DOWNLOAD_TIMEOUT_S = 3.0  # the same for each weights download host, asked only when a file is not here
URL_PORTS = {"https": 443, "http": 80}
EXIT_OK = 0
EXIT_BLOCKED = 1


@dataclass(frozen=True)
class Line:
    """One finding; `blocking` ones mean no job can run on this machine as it is."""

    label: str
    text: str
    blocking: bool = False


def main(out: Optional[TextIO] = None) -> int:
    """Print every finding; exit code 0 when a job could run (on any device), 1 otherwise."""
    out = out or sys.stdout
    lines: List[Line] = []
    for check in CHECKS:
        found = _safely(check)
        lines += found
        for line in found:
            print(f"{line.label:<{LABEL_WIDTH}} {line.text}", file=out, flush=True)
    blockers = [line.label for line in lines if line.blocking]
    verdict = f"cannot run: fix {', '.join(blockers)}" if blockers else "ok: a job can run"
    print(f"{'verdict':<{LABEL_WIDTH}} {verdict}", file=out)
    return EXIT_BLOCKED if blockers else EXIT_OK


def _safely(check: Callable[[], List[Line]]) -> List[Line]:
    """A check that crashes becomes a line saying so; the doctor itself must never fail."""
    try:
        return check()
    except Exception as exc:  # any failure here is a finding, not a reason to stop
        return [Line(check.__name__.strip("_").replace("_", " "), f"check failed: {exc!r}")]


def _python() -> List[Line]:
    return [python_line(sys.version_info, sys.executable)]


def python_line(version: Sequence[int], executable: str) -> Line:
    """The interpreter; one older than cuda.MIN_PYTHON blocks (its re-exec needs sys.orig_argv)."""
    text = f"{'.'.join(str(part) for part in version[:3])} ({executable})"
    if tuple(version[:2]) < cuda.MIN_PYTHON:
        needed = ".".join(str(part) for part in cuda.MIN_PYTHON)
        return Line("python", f"{text}: lipsync needs Python {needed} or newer", blocking=True)
    return Line("python", text)


def _paddle() -> List[Line]:
    try:
        with warnings.catch_warnings():  # the GPU build warns when no GPU is set up: the gpus line says so
            warnings.simplefilter("ignore")
            import paddle
    except Exception as exc:  # ImportError, or a broken wheel's OSError
        return [Line("paddle", f"cannot import: {exc} (pip install -r requirements.txt or requirements-cpu.txt)", True)]
    if not paddle.is_compiled_with_cuda():
        return [Line("paddle", f"{paddle.__version__}, CPU-only build (paddlepaddle)")]
    built = f"CUDA {paddle.version.cuda()} / cuDNN {paddle.version.cudnn()}"
    return [Line("paddle", f"{paddle.__version__}, GPU build (paddlepaddle-gpu) for {built}")]


def _cuda_libraries() -> List[Line]:
    folder = cuda.prepare()
    if folder is None:
        links = "none: no nvidia-* CUDA wheels installed (fine on a CPU set-up)"
    else:
        state = "on" if cuda.on_library_path(folder) else "NOT on"
        links = f"{folder} ({state} {cuda.LIBRARY_PATH_ENV}; start through `python -m lipsync` or app.py)"
    lines = [Line("cuda links", links)]
    for name in (*cuda.REQUIRED, *cuda.OPTIONAL):
        lines.append(Line(name, _library_text(cuda.check_library(name), optional=name in cuda.OPTIONAL)))
    return lines


def _library_text(library: cuda.Library, optional: bool) -> str:
    if library.path is None:
        return "missing" + (" (optional)" if optional else "")
    if library.error is not None:
        return f"{library.path} does not load: {library.error}"
    return str(library.path)


def _gpus() -> List[Line]:
    import paddle

    if not paddle.is_compiled_with_cuda():
        return [Line("gpus", "not checked: CPU-only paddle")]
    count = paddle.device.cuda.device_count()
    names = ", ".join(paddle.device.cuda.get_device_name(i) for i in range(count))
    return [Line("gpus", f"{count}" + (f": {names}" if names else ""))]


def _device() -> List[Line]:
    from .runtime import choose_device

    device = choose_device("auto", announce=False)
    return [Line("device auto", f"{device.kind}: {device.reason}")]


def _cpu() -> List[Line]:
    from . import cpu

    return [Line("cpu", f"{cpu.cpu_features()}; {cpu.cpu_threads()} threads for the networks")]


def _precision() -> List[Line]:
    """The precision gate's verdict on the default generator, as a picture's and a video's job use it (measured now
    if no job has yet); it needs the generator's weights on this machine."""
    from . import precision, weights
    from .engine import Engine
    from .options import LipSyncOptions
    from .runtime import choose_device

    device = choose_device("auto", announce=False)
    faster = precision.faster_precision(device)
    if faster is None:
        return [Line("precision", "fp32: this CPU has neither AMX nor AVX-512 BF16, so there is no faster precision")]
    status = {s.name: s for s in weights.cached_status()}.get(weights.DEFAULT_WAV2LIP)
    if status is None or status.path is None:
        return [Line("precision", f"{faster} not measured yet: {weights.DEFAULT_WAV2LIP} is not on this machine "
                                  "(the first job measures it)")]  # fmt: skip
    engine, options = Engine(), LipSyncOptions(device=device.kind)
    networks = (("picture", engine.still_generator(options, device).decoder),
                ("video", engine.generator(options, device)))  # fmt: skip
    return [Line("precision", f"{job}: {_verdict_text(predictor)}") for job, predictor in networks]


def _verdict_text(predictor: "object") -> str:
    verdict = getattr(predictor, "verdict", None)
    used = getattr(predictor, "precision", "fp32")
    return used if verdict is None else f"{used} ({verdict.describe()})"


def _tools() -> List[Line]:
    lines = []
    for tool, needed_for in (("ffmpeg", ""), ("ffprobe", ""), ("espeak-ng", "the app's offline text-to-speech")):
        version = tool_version(tool)
        if version is not None:
            lines.append(Line(tool, version))
        elif needed_for:
            lines.append(Line(tool, f"missing (only {needed_for} needs it)"))
        else:
            lines.append(Line(tool, "missing: install it (apt-get install ffmpeg)", blocking=True))
        if tool == "ffmpeg" and version is not None:
            lines += [_hdr_line(), _encoder_line()]
    return [*lines, _heic_line()]


def _hdr_line() -> Line:
    from . import video

    if video.can_tone_map():
        return Line("hdr video", "tone-mapped to SDR (ffmpeg has zscale and tonemap)")
    return Line("hdr video", "read as it is, colours dull: this ffmpeg lacks zscale or tonemap (Debian's has both)")


def _encoder_line() -> Line:
    """What encodes a video's H.264 here: NVENC is tried (a test encode) only when the networks would run on a GPU."""
    from . import nvenc
    from .runtime import choose_device

    return Line("video encoder", nvenc.describe(choose_device("auto", announce=False).kind == "gpu"))


def _heic_line() -> Line:
    from . import picture

    if picture.reads_heif():
        return Line("heic photos", f"read (pillow-heif {importlib.metadata.version('pillow-heif')})")
    return Line("heic photos", "cannot be read: pip install pillow-heif")


def tool_version(tool: str) -> Optional[str]:
    """The version a command-line tool reports, or None when it is not installed or does not answer."""
    path = shutil.which(tool)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version" if tool == "espeak-ng" else "-version"],
                              capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    first = (done.stdout or done.stderr).strip().splitlines()[:1]
    return _version_word(first[0]) if first else None


def _version_word(banner: str) -> str:
    """The word after 'version' (ffmpeg: '5.1.9-0+deb12u1') or 'text-to-speech:' (espeak-ng: '1.51')."""
    words = banner.replace(":", " ").split()
    for index, word in enumerate(words):
        if word in ("version", "text-to-speech") and index + 1 < len(words):
            return words[index + 1]
    return banner


def _weights() -> List[Line]:
    from . import weights

    own = weights.models_dir()
    where = f"${weights.MODELS_ENV}={own}" if own else f"${weights.MODELS_ENV} not set"
    lines = [Line("models dir", f"{where}; cache {weights.cache_dir()}")]
    for status in weights.cached_status():
        here = _weights_text(status, weights.WEIGHTS[status.name].size_mb)
        lines.append(Line(f"  {status.name}", f"{here}; {weights.pinning(status.name)}"))
    return lines


def _weights_text(status: WeightsStatus, size_mb: int) -> str:
    """Where a known file is and whether it checks out; how the table pins it follows on the same line."""
    if status.path is None:
        return f"not on this machine (downloaded on first use, ~{size_mb} MB)"
    check = {True: "sha256 verified", False: "sha256 MISMATCH: delete it", None: "unchecked"}
    return f"{status.where} {status.path} ({check[status.verified]})"


def _job_weights() -> List[Line]:
    """Whether a job can get its networks: the default generator (or another), and the S3FD detector."""
    from . import weights

    statuses = {status.name: status for status in weights.cached_status()}
    answers = _host_answers()
    generator = _supply_line("generator", "wav2lip", weights.DEFAULT_WAV2LIP, statuses, answers)
    detector = _supply_line("detector", "s3fd", weights.DEFAULT_S3FD, statuses, answers)
    return [generator, detector]


def _supply_line(
    label: str, kind: str, default: str, statuses: Dict[str, "WeightsStatus"], answers: Callable[[str], Optional[str]]
) -> Line:
    """The default weights if usable; else another of the kind, if usable; else what to put where."""
    from . import weights

    usable, how = _supply(statuses[default], answers)
    if usable:
        return Line(label, how)
    for name in weights.available_models(kind):
        if name != default:
            other_usable, other_how = _supply(statuses[name], answers)
            if other_usable:
                choose = f"{weights.PATH_OPTIONS[kind]} {name} on the command line"
                return Line(label, f"{how}; {other_how}: choose {name} ({choose})")
    entry = weights.WEIGHTS[default]
    put = f"put {entry.filename} (from {entry.download_url}) in {weights.models_dir_text()}"
    if kind == "s3fd":  # the app then finds faces with Haar by itself; the command line is told how
        return Line(label, f"{how}; the app uses OpenCV's Haar cascade instead (--face_detector haar), or {put}")
    return Line(label, f"{how}: {put}", blocking=True)


def _supply(status: "WeightsStatus", answers: Callable[[str], Optional[str]]) -> Tuple[bool, str]:
    """(usable, how): on this machine and intact, or downloadable from a host that answers now; else why not."""
    from . import weights

    if status.path is not None and status.verified is not False:
        return True, f"{status.name} ready ({status.where})"
    if status.where == "models dir":  # a file there under a known name must be that file: it is refused
        return False, f"{status.name} in ${weights.MODELS_ENV} fails its sha256"
    problems = []
    for source in weights.download_sources(status.name):
        host = urllib.parse.urlsplit(source.url).hostname
        problem = source.problem or answers(source.url)
        if problem is None:
            size = weights.WEIGHTS[status.name].size_mb
            return True, f"{status.name} downloads on first use from {host} (~{size} MB; it answers)"
        problems.append(f"{host}: {problem}")
    return False, f"{status.name} is not on this machine and cannot be downloaded ({'; '.join(problems)})"


def _host_answers() -> Callable[[str], Optional[str]]:
    """connection_problem for a URL's host and port, asked once per host and port within one doctor run."""
    seen: Dict[Tuple[str, int], Optional[str]] = {}

    def answers(url: str) -> Optional[str]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname or "", parts.port or URL_PORTS.get(parts.scheme, URL_PORTS["https"]))
        if key not in seen:
            seen[key] = connection_problem(*key, DOWNLOAD_TIMEOUT_S)
        return seen[key]

    return answers


def _edge_tts() -> List[Line]:
    try:
        version = importlib.metadata.version("edge-tts")
    except importlib.metadata.PackageNotFoundError:
        return [Line("edge-tts", "not installed (the app then speaks with espeak-ng)")]
    problem = connection_problem(EDGE_TTS_HOST, EDGE_TTS_PORT, EDGE_TTS_TIMEOUT_S)
    state = "service reachable" if problem is None else f"service unreachable ({problem})"
    return [Line("edge-tts", f"{version}, {state}")]


def connection_problem(host: str, port: int, timeout: float) -> Optional[str]:
    """None when a TCP connection to host:port opens within `timeout` (name lookup included), else why not."""
    outcome: List[Optional[str]] = [f"no answer within {timeout:g} s"]

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome[0] = None
        except OSError as exc:
            outcome[0] = exc.strerror or str(exc) or type(exc).__name__

    worker = threading.Thread(target=attempt, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    return outcome[0]


CHECKS: List[Callable[[], List[Line]]] = [
    _python, _paddle, _cuda_libraries, _gpus, _device, _cpu, _tools, _weights, _job_weights, _precision, _edge_tts,
]  # fmt: skip
