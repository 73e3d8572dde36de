"""The one exception type users see, and how other errors are quoted inside our messages."""

from __future__ import annotations

import re

REASON_CHARS = 160  # of another library's error quoted in ours
OBJECT_REPR = re.compile(r"\S*<[^<>]* object at 0x[0-9a-f]+>")  # noise such as aiohttp's "ssl:<SSLContext …>"


class LipSyncError(Exception):
    """Bad input or set-up; the message says what went wrong and what to do about it."""


def first_line(problem: BaseException | str, limit: int = REASON_CHARS) -> str:
    """A short, one-line account of an exception (or error text) to quote in a message: its first non-empty
    line, without object reprs, white space folded, at most `limit` characters; the type name if it says nothing."""
    text = str(problem)
    line = next((part for part in (" ".join(OBJECT_REPR.sub("", raw).split()) for raw in text.splitlines()) if part),
                "")  # fmt: skip
    if not line:
        line = type(problem).__name__ if isinstance(problem, BaseException) else "no details"
    return line[:limit]
