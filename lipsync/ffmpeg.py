"""Running ffmpeg and ffprobe: the shared argument pieces, the one "not found" error, runs to completion,
and piped processes that are always killed, reaped and have every pipe and file closed when stopped."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO

from lipsync import errors
from lipsync.errors import LipSyncError

try:
    import fcntl
except ImportError:  # not on Windows: pipes keep their size there
    fcntl = None  # type: ignore[assignment]

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
LOG_LEVEL = "error"  # only errors reach stderr, so its last lines name the cause
STDERR_TAIL_LINES = 3  # last lines of stderr quoted (on one line) in a LipSyncError
LINE_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\]\s*)?((file:)?/[^:]*:\s*)?")  # "[mov @ 0x5f…] ", "file:/a/b.mp4: "
NO_ERROR_TEXT = "ffmpeg printed no error"
RATE_MAX_DENOMINATOR = 100_000  # float fps -> exact ffmpeg rational (30000/1001 survives)
# Frames cross the pipes in pieces of the pipe's size: Linux's default 64 KiB made a 720p frame (2.7 MB) 43
# hand-overs between us and ffmpeg; 1 MiB (Linux's limit for an unprivileged process) makes it 3.
PIPE_BYTES = 1 << 20
# Sound from where its file starts: a recording whose sound begins after its picture (0.45 s in a test clip) is
# decoded and muxed with that lead as silence, so the mouth drawn for its mel and the sound heard stay together.
# Without it the decoded speech began at its first sample while the muxed track kept its offset: 0.4 s out of sync.
# Files whose sound starts with them decode bit for bit as without it
AUDIO_FROM_FILE_START = "aresample=first_pts=0"
INSTALL_HINT = "install ffmpeg (e.g. `apt install ffmpeg`) and make sure ffmpeg and ffprobe are on PATH"


# ---------------------------------------------------------------- argument pieces (pure)


def file_arg(path: str | Path) -> str:
    """ffmpeg input/output name for a local path: `file:` so names like `-x.mp4` or `a:b.mp4` stay paths."""
    return f"file:{os.fspath(path)}"


def rate_arg(fps: float) -> str:
    """A frame rate as an exact ffmpeg rational ("25", "30000/1001")."""
    return str(Fraction(fps).limit_denominator(RATE_MAX_DENOMINATOR))


def head() -> list[str]:
    """How every ffmpeg command starts: no banner, never reads the terminal, only errors on stderr."""
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", LOG_LEVEL]


def probe_args(path: str | Path) -> list[str]:
    """ffprobe command that describes every stream and the container as JSON."""
    return [FFPROBE, "-v", LOG_LEVEL, "-print_format", "json", "-show_format", "-show_streams", file_arg(path)]


# ---------------------------------------------------------------- finding the tools


def missing(tool: str = FFMPEG) -> LipSyncError:
    """The one error for ffmpeg or ffprobe not being installed."""
    return LipSyncError(f"{tool} was not found: {INSTALL_HINT}")


def require() -> None:
    """LipSyncError saying what to install when ffmpeg or ffprobe is not on PATH, before any work starts."""
    for tool in (FFMPEG, FFPROBE):
        if shutil.which(tool) is None:
            raise missing(tool)


def _not_found(error: FileNotFoundError, args: list[str]) -> LipSyncError:
    return missing(os.path.basename(os.fspath(error.filename or args[0])))


# ---------------------------------------------------------------- what ffmpeg said


def tail(text: bytes | str, path: str | Path | None = None) -> str:
    """Last lines of ffmpeg's stderr on one line, for an error message, without its "[demuxer @ 0x…]"
    and "file:/path:" prefixes (the message names the file); `path`, when given, is removed exactly."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    names = [] if path is None else [f"{file_arg(path)}: ", f"{os.fspath(path)}: "]
    lines = []
    for line in text.strip().splitlines():
        for name in names:
            line = line.replace(name, "")
        lines.append(LINE_PREFIX.sub("", line.strip()))
    return " | ".join(line for line in lines[-STDERR_TAIL_LINES:] if line) or NO_ERROR_TEXT


def first_line(text: bytes | str) -> str:
    """The first line ffmpeg wrote on stderr (the cause; later lines say what failed because of it), without
    its "[encoder @ 0x…]" prefix, as errors.first_line quotes another tool's words."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    stripped = "\n".join(LINE_PREFIX.sub("", line.strip()) for line in text.splitlines())
    return errors.first_line(stripped) if stripped.strip() else NO_ERROR_TEXT


# ---------------------------------------------------------------- running


def run(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a short ffmpeg/ffprobe command to completion, stdout and stderr captured (subprocess.run reaps
    the child even when interrupted, or killed after `timeout` seconds: subprocess.TimeoutExpired)."""
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=timeout)
    except FileNotFoundError as error:
        raise _not_found(error, args) from error


@functools.lru_cache(maxsize=None)
def has_filters(*names: str) -> bool:
    """Whether this ffmpeg has every one of these filters (builds differ: zscale needs libzimg)."""
    listed = run([FFMPEG, "-hide_banner", "-filters"]).stdout.decode(errors="replace").split()
    return all(name in listed for name in names)


class Process:
    """One ffmpeg with stdin and/or stdout piped and stderr collected in an unnamed temp file.

    stop() (or leaving a `with` block) kills it if it still runs, reaps it and closes both pipes and the
    stderr file; it is idempotent, so every owner can call it in a `finally`.
    """

    def __init__(self, args: list[str], *, stdin: bool = False, stdout: bool = False,
                 temp_dir: str | Path | None = None) -> None:
        self._errors: IO[bytes] | None = tempfile.TemporaryFile(dir=temp_dir)
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                          stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                          stderr=self._errors)
        except FileNotFoundError as error:
            self._errors.close()
            raise _not_found(error, args) from error
        except BaseException:
            self._errors.close()
            raise
        self.stdin: IO[bytes] | None = self._proc.stdin
        self.stdout: IO[bytes] | None = self._proc.stdout
        for pipe in (self.stdin, self.stdout):
            _widen(pipe)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def stopped(self) -> bool:
        """True once stop() ran: the child is reaped and nothing of it is open."""
        return self._errors is None

    def finish(self) -> int:
        """Close stdin (end of input), wait for ffmpeg to exit and return its exit code."""
        _close_quietly(self.stdin)
        return self._proc.wait()

    def wait(self) -> int:
        """Wait for ffmpeg to exit (it has stopped reading its input) and return its exit code."""
        return self._proc.wait()

    def said(self, path: str | Path | None = None) -> str:
        """The tail of what ffmpeg wrote on stderr so far (see `tail`)."""
        return tail(self._stderr(), path)

    def cause(self) -> str:
        """The first line ffmpeg wrote on stderr so far (see `first_line`)."""
        return first_line(self._stderr())

    def _stderr(self) -> bytes:
        """What ffmpeg wrote on stderr so far (nothing once stopped)."""
        if self._errors is None:
            return b""
        self._errors.seek(0)
        return self._errors.read()

    def stop(self) -> None:
        """Kill (if still running) and reap ffmpeg; close its pipes and the stderr file."""
        if self._errors is None:
            return
        try:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        finally:
            _close_quietly(self.stdin)
            _close_quietly(self.stdout)
            self._errors.close()
            self._errors = None

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _close_quietly(stream: IO[bytes] | None) -> None:
    """Close a pipe. Data still buffered for an ffmpeg that has gone cannot be flushed (BrokenPipeError):
    that no longer matters, and the descriptor is closed all the same."""
    if stream is None:
        return
    try:
        stream.close()
    except OSError:
        pass


def _widen(pipe: IO[bytes] | None) -> None:
    """Give a pipe PIPE_BYTES of buffer where the system allows it (Linux); elsewhere it stays as it is."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # over the system's limit (/proc/sys/fs/pipe-max-size) or the user's pipe budget
        pass
