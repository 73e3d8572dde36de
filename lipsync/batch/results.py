"""What a batch did, row by row (results.csv), and whether a row's output from an earlier run is complete.

An output is complete when it is whole: an mp4's or a .mov's boxes fill the file exactly (lipsync's index, the moov
box, comes first, so ffprobe alone would still read a file cut short in its media data), a .mkv's or a .webm's
packets reach the length its header states (written first, too); ffprobe reads it, it has the codecs its name asks
for (H.264 and AAC, or VP9 and Opus in a .webm), they last as long as each other (lipsync makes them equal), and,
for a row with an audio file, as long as that file's audio. lipsync itself never leaves a partial file under a
final name (it writes a hidden .part file and renames it), so this catches files cut short by other means, or made
from other speech."""

from __future__ import annotations

import csv
import os
import secrets
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List, Optional, Sequence

from .. import containers, ffmpeg, mediainfo
from ..errors import LipSyncError
from .manifest import Job

RESULTS_NAME = "results.csv"
DONE, FAILED, SKIPPED, INTERRUPTED = "done", "failed", "skipped", "interrupted"
LENGTH_TOLERANCE_FRAMES = 2  # an output's length may differ from its speech's by this many frames…
AAC_BLOCK_S = 0.07  # …plus one AAC block (1024 samples at 16 kHz: 64 ms)
# A Matroska file's packets end this close to the length its header states (measured: 0 to 23 ms, an AAC priming
# block; a file cut short ends short of it by the clusters it lost)
MATROSKA_END_TOLERANCE_S = 0.1
MP4_REQUIRED_BOXES = {b"ftyp", b"moov", b"mdat"}
BOX_HEADER, LARGE_SIZE = 8, 8  # bytes: size (32-bit) + type; a size of 1 means a 64-bit size follows
PARTIAL_GLOB = ".{name}.*.part"  # what lipsync.encoding.VideoWriter writes before renaming into place


@dataclass
class ResultRow:
    """One manifest row's outcome, as results.csv lists it."""

    row: int
    face: str
    speech: str  # the audio file, or the text spoken
    outfile: str
    status: str  # done, failed, skipped (complete from an earlier run) or interrupted
    attempts: int = 0  # times a worker started it: 2 or more when a worker died during it and it was retried
    seconds: float = 0.0
    frames: int = 0
    device: str = ""
    worker: str = ""  # host:pid of the worker process that finished it
    error: str = ""  # why a failed row failed, on one line
    notes: str = ""  # what the run changed or stood in for (as the CLI's note: lines), and retries

    @classmethod
    def for_job(cls, job: Job, status: str, **values) -> "ResultRow":
        return cls(row=job.row, face=str(job.face), speech=job.speech, outfile=str(job.outfile), status=status,
                   **values)  # fmt: skip


def write_results(path: Path, rows: Sequence[ResultRow]) -> Path:
    """Write results.csv in row order, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(ResultRow)])
            writer.writeheader()
            for row in sorted(rows, key=lambda r: r.row):
                writer.writerow({**asdict(row), "seconds": f"{row.seconds:.2f}"})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_results(path: Path) -> List[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def is_complete(job: Job) -> bool:
    """Whether the job's output exists from an earlier run and is a whole video of the right length."""
    assert job.outfile is not None
    container = containers.CONTAINERS.get(job.outfile.suffix.lower())
    if container is None or not job.outfile.is_file():
        return False
    if container.boxes and not mp4_boxes_complete(job.outfile):
        return False
    data = _described(job.outfile, packets=not container.boxes)
    if data is None or _codecs(data) != container.codecs:
        return False
    if not container.boxes and not matroska_packets_complete(data):
        return False
    out = mediainfo.from_ffprobe(job.outfile, data)
    if not out.fps:
        return False
    tolerance = LENGTH_TOLERANCE_FRAMES / out.fps + AAC_BLOCK_S
    if abs(out.duration - out.audio_duration) > tolerance:
        return False
    return job.audio is None or _close_to_speech(job.audio, out.audio_duration, tolerance)


def _described(path: Path, packets: bool) -> Optional[dict]:
    """ffprobe's JSON description of the file's streams and container, with each packet's time and length when
    `packets` (one ffprobe run for every check); None when ffprobe cannot read it."""
    import json

    args = ffmpeg.probe_args(path)
    if packets:
        args[-1:-1] = ["-show_entries", "packet=pts_time,duration_time"]
    result = ffmpeg.run(args)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout or b"{}")
    return data if data.get("streams") else None


def matroska_packets_complete(data: dict) -> bool:
    """Whether the packets of a Matroska (or WebM) file, as `_described` lists them, last as long as its header
    says (within MATROSKA_END_TOLERANCE_S): its length is written at the front, so a file cut short still states
    it."""
    ends = [float(p.get("pts_time", 0)) + float(p.get("duration_time", 0)) for p in data.get("packets", [])]
    stated = float(data.get("format", {}).get("duration", 0))
    return bool(ends) and stated > 0 and max(ends) >= stated - MATROSKA_END_TOLERANCE_S


def mp4_boxes_complete(path: Path) -> bool:
    """Whether the file is a sequence of whole top-level MP4 boxes, ftyp, moov and mdat among them."""
    seen, end, offset = set(), path.stat().st_size, 0
    with path.open("rb") as handle:
        while offset < end:
            handle.seek(offset)
            header = handle.read(BOX_HEADER)
            if len(header) < BOX_HEADER:
                return False
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                large = handle.read(LARGE_SIZE)
                size = struct.unpack(">Q", large)[0] if len(large) == LARGE_SIZE else 0
            elif size == 0:  # "to the end of the file"
                size = end - offset
            if size < BOX_HEADER:
                return False
            seen.add(kind)
            offset += size
    return offset == end and MP4_REQUIRED_BOXES <= seen


def _close_to_speech(speech: Path, seconds: float, tolerance: float) -> bool:
    try:
        expected = mediainfo.probe(speech, require_video=False).audio_duration
    except LipSyncError:
        return False
    return abs(expected - seconds) <= tolerance


def _codecs(data: dict) -> tuple:
    """(video codec, audio codec) of the first streams ffprobe described."""
    streams = data.get("streams", [])
    first = {kind: next((s.get("codec_name") for s in streams if s.get("codec_type") == kind), None)
             for kind in ("video", "audio")}  # fmt: skip
    return first["video"], first["audio"]


def remove_stale_partials(job: Job) -> None:
    """Delete hidden .part files an interrupted run left beside this job's output (a killed process cannot)."""
    assert job.outfile is not None
    for stale in job.outfile.parent.glob(PARTIAL_GLOB.format(name=job.outfile.name)):
        stale.unlink(missing_ok=True)
