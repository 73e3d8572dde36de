"""Finished pieces of a video while it is still being encoded, for players that start before the end (the app's
streaming result).

The writer's one ffmpeg sends the same encoded packets to the mp4 and, through ffmpeg's tee muxer, to its
segment muxer, which cuts them into SEGMENT_SECONDS-long MPEG-TS files (H.264 + AAC, each starting on a
keyframe, each playable alone). Frames are encoded once, and the mp4 is byte for byte the one written without
segments. A watcher thread hands each file to a callback as soon as ffmpeg has moved on to the next one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

from lipsync.ffmpeg import file_arg

SEGMENT_SECONDS = 1  # every mp4 lipsync writes has a keyframe each second: where a segment may end (and seeks land)
SEGMENT_PATTERN = "segment-%05d.ts"  # ffmpeg's name for the n-th segment …
SEGMENT_NAME = "segment-{:05d}.ts"  # … and ours
WATCH_INTERVAL_S = 0.05  # how often the watcher looks for a new segment: small next to a segment's length

SegmentSink = Callable[[Path], None]
"""Called with each finished segment, in order, on the watcher's thread (or the writer's, for the last ones). The
file is the callee's to move or copy before it returns: the folder it is in goes when the run ends."""


def keyframe_args() -> list[str]:
    """A keyframe every SEGMENT_SECONDS of output, by time, whatever the frame rate (in every encode, so the mp4
    is the same with or without segments)."""
    return ["-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})"]


def tee_name(path: str | Path) -> str:
    """A file name as one output of ffmpeg's tee muxer: quoted, since | [ ] : ' and spaces mean something there."""
    return "'" + file_arg(path).replace("'", "'\\''") + "'"


def tee_output_args(mp4: str | Path, folder: str | Path) -> list[str]:
    """Output options writing the encoded streams both to `mp4` (as `-movflags +faststart -f mp4` would) and as
    numbered segments into `folder`. Streams must be mapped explicitly (-map): tee selects none by itself."""
    outputs = (f"[f=mp4:movflags=+faststart]{tee_name(mp4)}"
               f"|[f=segment:segment_time={SEGMENT_SECONDS}:segment_format=mpegts]"
               f"{tee_name(Path(folder) / SEGMENT_PATTERN)}")  # fmt: skip
    # global headers: the mp4 needs them, and the segment muxer adds them in-band to every keyframe itself
    return ["-flags", "+global_header", "-f", "tee", outputs]


class SegmentWatcher:
    """Hands the segments ffmpeg writes into `folder` to `sink`, each once it is complete (the next one exists),
    from a thread of its own; finish() hands over the rest once ffmpeg has exited, stop() just stops watching.
    An error raised by the sink stops the watching and is raised again by finish()."""

    def __init__(self, folder: Path, sink: SegmentSink) -> None:
        self.folder = folder
        self.handed = 0  # segments handed over so far
        self._sink = sink
        self._error: Optional[BaseException] = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lipsync-segments", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            try:
                self._hand_over(last=False)
            except BaseException as error:  # kept for finish(): the writer's thread tells the run
                self._error = error
                return

    def _hand_over(self, last: bool) -> None:
        """Every complete segment not handed over yet (with `last`, the final one too: ffmpeg has exited)."""
        while True:
            segment = self.folder / SEGMENT_NAME.format(self.handed)
            complete = (self.folder / SEGMENT_NAME.format(self.handed + 1)).exists() or last
            if not (complete and segment.exists()):
                return
            self._sink(segment)
            self.handed += 1

    def stop(self) -> None:
        """Stop watching (and wait for the thread); idempotent."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def finish(self) -> None:
        """Once ffmpeg has exited well: hand over every segment left, in order; the sink's error, if it raised."""
        self.stop()
        if self._error is not None:
            raise self._error
        self._hand_over(last=True)
