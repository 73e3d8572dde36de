"""Finished pieces of a video while it is still being encoded, for players that start before the end (the app's
streaming result).

The writer feeds the frames it is given to a second ffmpeg as well, which encodes them with the same audio into
SEGMENT_SECONDS-long MPEG-TS segments (H.264 + AAC, each starting on a keyframe, each playable alone) through
its segment muxer; the mp4's own ffmpeg command and bytes stay exactly as without segments (its long GOP keeps a
still picture's background steady and the file small). The segment encode has no lookahead and no B-frames
(x264's zerolatency), so a segment is out as soon as its last frame is in: in the mp4's own ffmpeg it would wait
for the mp4's encoder, which holds ~20 frames back. It costs a few milliseconds a frame next to the networks'
tens. A watcher thread hands each file to a callback as soon as ffmpeg has moved on to the next one.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from pathlib import Path
from typing import Callable, Optional

from lipsync import ffmpeg
from lipsync.errors import LipSyncError
from lipsync.ffmpeg import file_arg

SEGMENT_SECONDS = 1  # a keyframe and a new segment every second of the streamed encode
SEGMENT_PATTERN = "segment-%05d.ts"  # ffmpeg's name for the n-th segment …
SEGMENT_NAME = "segment-{:05d}.ts"  # … and ours
WATCH_INTERVAL_S = 0.05  # how often the watcher looks for a new segment: small next to a segment's length

SegmentSink = Callable[[Path], None]
"""Called with each finished segment, in order, on the watcher's thread (or the writer's, for the last ones). The
file is the callee's to move or copy before it returns: the folder it is in goes when the writer closes."""
SegmentArgs = Callable[[Path], "list[str]"]  # the segment encoder's ffmpeg command, writing into a folder


def output_args(folder: str | Path) -> list[str]:
    """The options that make an output (after its streams and codecs) the streamed segments, written into
    `folder`: a keyframe every SEGMENT_SECONDS, each frame out of the encoder at once, a segment at each keyframe."""
    pattern = file_arg(Path(str(folder).replace("%", "%%")) / SEGMENT_PATTERN)  # the folder's own % are no fields
    return ["-tune", "zerolatency", "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})",
            "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mpegts", pattern]


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


class SegmentEncoder:
    """The second ffmpeg (its command from `make_args(folder)`, reading raw frames on stdin) writing segments into
    a new folder in `temp_dir`, and the watcher handing them to `sink`. finish() once every frame was written;
    stop() to give up. Either way ffmpeg is reaped, the watcher stopped and the folder removed."""

    def __init__(self, make_args: SegmentArgs, sink: SegmentSink, temp_dir: str | Path) -> None:
        self.folder = Path(temp_dir) / f"segments-{secrets.token_hex(4)}"
        self.folder.mkdir()
        self._reading = True  # ffmpeg takes frames until the audio's end (-t), then stops reading
        try:
            self._process = ffmpeg.Process(make_args(self.folder), stdin=True, temp_dir=temp_dir)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self._watcher = SegmentWatcher(self.folder, sink)

    def write(self, data: memoryview) -> None:
        """One raw frame, as the mp4's ffmpeg gets it."""
        if not self._reading:
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._reading = False  # finish() tells the audio's end from a failure

    def finish(self) -> None:
        """End of the frames: wait for ffmpeg, then hand over the last segments; LipSyncError if it failed."""
        try:
            code = self._process.finish()
            if code != 0:
                raise LipSyncError(f"ffmpeg could not write the streamed segments ({self._process.said()})")
            self._watcher.finish()
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill and reap ffmpeg, stop the watcher, remove the folder; idempotent."""
        try:
            self._process.stop()
            self._watcher.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
