"""Native libraries' chatter on stderr (paddle's IR passes, libpng, OpenCV) held back, so our errors stand alone.

Holding it back redirects file descriptor 2, which is one per process: while it is redirected, whatever any
other thread writes to stderr is caught too. So it is off unless a single-threaded program (the CLI) turns it
on with hide_native_chatter(True); a library user's or a server's stderr is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Iterator, Pattern

log = logging.getLogger(__name__)

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
STDERR_FD = 2
_LOCK = threading.Lock()  # file descriptor 2 is one per process: one redirection at a time
_hiding = False  # whether held_back redirects file descriptor 2 (see hide_native_chatter)


def hide_native_chatter(enabled: bool) -> None:
    """Let held_back catch native output (True), or leave stderr alone (False, the default).

    Only for single-threaded processes: the redirection catches every thread's stderr while it lasts."""
    global _hiding
    _hiding = enabled


def hiding_native_chatter() -> bool:
    """Whether held_back currently redirects file descriptor 2."""
    return _hiding


@contextlib.contextmanager
def held_back(chatter: Pattern[str], source: str) -> Iterator[None]:
    """While inside, what native code writes to file descriptor 2 is caught; lines matching `chatter` are
    logged at debug level (as from `source`), the rest are passed on to stderr when the block ends.

    Does nothing (stderr stays as it is) unless hide_native_chatter(True) was called."""
    if not _hiding:
        yield
        return
    with _LOCK, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(STDERR_FD)
        os.dup2(caught.fileno(), STDERR_FD)
        try:
            yield
        finally:
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            caught.seek(0)
            _pass_on(caught.read().decode("utf-8", "replace"), chatter, source)


def _pass_on(text: str, chatter: Pattern[str], source: str) -> None:
    for line in text.splitlines():
        plain = ANSI_COLOUR.sub("", line).strip()
        if chatter.search(plain):
            log.debug("%s: %s", source, plain)
        elif plain:
            print(line, file=sys.stderr)


def release_freed_memory() -> None:
    """Hand memory freed by the run back to the system (glibc keeps it per thread otherwise, and a server's
    resident size would only grow); a no-op where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():  # -> Optional[ctypes function]
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None
