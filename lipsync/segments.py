"""Finished pieces of a video while it is still being encoded, for players that start before the end (the app's
streaming result).

Asked for segments, the writer's one ffmpeg encodes once and hands the same H.264 and AAC packets to two muxers
(ffmpeg's tee): the mp4, and SEGMENT_SECONDS-long MPEG-TS segments (its segment muxer), each starting on a keyframe
and playable alone (the keyframes carry their SPS/PPS). So the stream shows exactly the frames of the mp4, and
the encode forces a keyframe every SEGMENT_SECONDS into both. A segment is out once x264's lookahead (~13 frames
at the mp4's preset) has passed its last frame. A watcher thread hands each file to a callback as soon as ffmpeg
has moved on to the next one.

Why one encode rather than a second ffmpeg with x264's zerolatency beside the mp4's (the design until 2026-12-04):
a 512² picture talking for 15 s (375 frames, 2-vCPU Zen 4, one thread) took 0.60 CPU s to encode against 1.19
(0.52 mp4 + 0.67 segments), on the cores the generator needs: the page's warm picture job ran at 84 % of the
generator alone against 91 % unstreamed. Its segments are 1.6 MB against 2.9 (zerolatency has no mbtree, no
B-frames), at a PSNR against the lossless frames of 47.5 dB (the mouth 42.2) against the old mp4's 46.3 (41.5);
the background's per-frame PSNR moves by at most 2.0 dB frame to frame, as it did in the long-GOP mp4 (2.1). The
mp4 of a streamed run is larger for its keyframes (1.4 MB against 0.4); a run without segments keeps its long GOP.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from lipsync.ffmpeg import file_arg

SEGMENT_SECONDS = 1  # a keyframe and a new segment every second of the streamed encode
SEGMENT_PATTERN = "segment-%05d.ts"  # ffmpeg's name for the n-th segment …
SEGMENT_NAME = "segment-{:05d}.ts"  # … and ours
WATCH_INTERVAL_S = 0.05  # how often the watcher looks for a new segment: small next to a segment's length
TEE_SPECIAL = "\\'| \t\n\r"  # what ffmpeg's tee reads in a slave's name (separator, quotes, escapes, spaces)

SegmentSink = Callable[[Path], None]
"""Called with each finished segment, in order, on the watcher's thread (or the writer's, for the last ones). The
file is the callee's to move or copy before it returns: the folder it is in goes when the writer closes."""


def tee_args(mp4: str | Path, mp4_muxer: Sequence[Tuple[str, str]], folder: str | Path) -> list[str]:
    """The options that make an output (after its streams and codecs) both the mp4 at `mp4` (muxed with the
    (option, value) pairs of `mp4_muxer`) and the segments in `folder`, from one encode: a keyframe every
    SEGMENT_SECONDS, headers out of band for the mp4 and repeated at each keyframe for the segments, a segment at
    each keyframe."""
    pattern = Path(str(folder).replace("%", "%%")) / SEGMENT_PATTERN  # the folder's own % are no fields
    muxer = ":".join(f"{name}={value}" for name, value in mp4_muxer)
    mp4_out = f"[{muxer}]{tee_escape(file_arg(mp4))}"
    segments_out = (f"[f=segment:segment_time={SEGMENT_SECONDS}:segment_format=mpegts:bsfs/v=dump_extra]"
                    f"{tee_escape(file_arg(pattern))}")  # fmt: skip
    return ["-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})", "-flags", "+global_header",
            "-f", "tee", f"{mp4_out}|{segments_out}"]


def tee_escape(name: str) -> str:
    """`name` as ffmpeg's tee muxer reads it back: each of TEE_SPECIAL after a backslash."""
    return "".join(f"\\{char}" if char in TEE_SPECIAL else char for char in name)


class SegmentStream:
    """A new folder in `temp_dir` for the segments the writer's ffmpeg makes (tee_args), and a thread of its own
    handing each to `sink` once it is complete (the next one exists). finish() once ffmpeg has exited well: the
    rest, in order; stop() to give up. Either way the thread stops and the folder goes. An error raised by the
    sink stops the watching and is raised again by finish()."""

    def __init__(self, sink: SegmentSink, temp_dir: str | Path) -> None:
        self.folder = Path(temp_dir) / f"segments-{secrets.token_hex(4)}"
        self.folder.mkdir()
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

    def _stop_watching(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def finish(self) -> None:
        """ffmpeg has exited well: hand over every segment left, in order; the sink's error, if it raised."""
        try:
            self._stop_watching()
            if self._error is not None:
                raise self._error
            self._hand_over(last=True)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the thread (waiting for it), remove the folder; idempotent."""
        try:
            self._stop_watching()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
