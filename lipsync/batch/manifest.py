"""A batch manifest (CSV with a header, or JSON Lines) → validated jobs, each with its own output name.

Every problem with the manifest itself is found here, before any job runs, and named by row and column;
problems with the files it names (missing, unreadable, no face) belong to the jobs and are found by them."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .. import containers, paths, tts
from ..errors import LipSyncError
from ..options import LipSyncOptions, option_names
from ..optiontext import option_value

FACE, AUDIO, TEXT, VOICE, RATE, OUTFILE = "face", "audio", "text", "voice", "rate", "outfile"
JOB_COLUMNS = (FACE, AUDIO, TEXT, VOICE, RATE, OUTFILE)
TEXT_ONLY_COLUMNS = (VOICE, RATE)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
OUTPUT_SUFFIX = ".mp4"  # a row without an outfile: its own name, as an mp4
SLUG_WORDS = 4  # words of a text row's text in its default output name
SLUG_CHARS = 40
SLUG_JUNK = re.compile(r"[^\w-]+")

PathLike = Union[str, Path]


class ManifestError(LipSyncError):
    """The manifest cannot be run as it is: a column is missing or unknown, or a row contradicts itself."""


@dataclass(frozen=True)
class Job:
    """One row of a batch: a face and its speech (a file, or text to speak), where the video goes, and options."""

    row: int  # 1-based data row of the manifest (the header is not a row)
    face: Path
    audio: Optional[Path] = None  # exactly one of audio and text
    text: Optional[str] = None
    voice: str = tts.DEFAULT_VOICE
    rate: int = 0  # speaking rate of a text row, % faster or slower
    outfile: Optional[Path] = None  # relative: under the batch's output folder; None: a name from the inputs
    options: LipSyncOptions = field(default_factory=LipSyncOptions)

    @property
    def speech(self) -> str:
        """The audio file or the text, for results and messages."""
        return str(self.audio) if self.audio is not None else (self.text or "")


def read_manifest(path: PathLike, base: Optional[LipSyncOptions] = None) -> List[Job]:
    """The jobs of a manifest file; relative paths in it are relative to its folder. ManifestError if malformed."""
    manifest = Path(path).expanduser()
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {manifest}: {exc}") from None
    name = manifest.name
    if manifest.suffix.lower() in JSONL_SUFFIXES:
        rows, columns = _jsonl_rows(text, name), None
    else:
        rows, columns = _csv_rows(text, name)
    return jobs_from_rows(rows, manifest.resolve().parent, base, name, columns)


def jobs_from_rows(rows: Iterable[Mapping[str, Any]], folder: Path, base: Optional[LipSyncOptions] = None,
                   source: str = "jobs", columns: Optional[Sequence[str]] = None) -> List[Job]:  # fmt: skip
    """Jobs from rows of column → value (text, or JSON values); `columns` are the header's, checked once."""
    if columns is not None:
        _check_columns([_column(column) for column in columns], source, None)
    jobs = [_job(number, dict(row), folder, base or LipSyncOptions(), source)
            for number, row in enumerate(rows, start=1)]  # fmt: skip
    if not jobs:
        raise ManifestError(f"{source} has no jobs: add one row per video under the header")
    return jobs


def _csv_rows(text: str, name: str) -> Tuple[List[Dict[str, str]], List[str]]:
    """The rows (column → cell) under the header, and its columns. Spreadsheets' leftovers are let be: columns without
    a name and nothing under them, and rows of empty cells."""
    lines = csv.reader(text.splitlines())
    columns = [_column(column) for column in next(lines, [])]
    named = [column for column in columns if column]
    if not named:
        raise ManifestError(f"{name} is empty: its first line must be a header such as face,audio,outfile")
    twice = sorted({column for column in named if named.count(column) > 1})
    if twice:
        raise ManifestError(f"{name}: the header names the column {twice[0]!r} twice; keep one")
    rows: List[Dict[str, str]] = []
    for cells in lines:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{name} row {len(rows) + 1}"
        if len(cells) > len(columns):
            raise ManifestError(f"{where}: more cells than the header's {len(columns)} columns")
        unnamed = [cell.strip() for column, cell in zip(columns, cells) if not column and cell.strip()]
        if unnamed:
            raise ManifestError(f"{where}: {unnamed[0]!r} is under a column without a name; name it in the header")
        rows.append({column: cell for column, cell in zip(columns, cells) if column})
    return rows, named


def _column(name: str) -> str:
    """A column's name as the manifest means it: spreadsheets capitalise headers and pad cells (" Face" is face)."""
    return name.strip().lower()


def _jsonl_rows(text: str, name: str) -> List[Dict[str, Any]]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{name} line {line_number} is not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{name} line {line_number}: each line must be one JSON object of column: value")
        rows.append(row)
    return rows


def _check_columns(columns: Iterable[str], source: str, row: Optional[int]) -> None:
    where = f"{source} row {row}" if row is not None else source
    known = set(JOB_COLUMNS) | set(option_names())
    for column in columns:
        if column not in known:
            raise ManifestError(f"{where}: unknown column {column!r}; columns are {', '.join(JOB_COLUMNS)} "
                                f"and the options {', '.join(option_names())}")  # fmt: skip
    if row is None and FACE not in columns:
        raise ManifestError(f"{where}: the column 'face' is missing (every job needs a face picture or video)")
    if row is None and AUDIO not in columns and TEXT not in columns:
        raise ManifestError(f"{where}: there is neither an 'audio' nor a 'text' column")


def _cell(value: Any) -> str:
    """A cell as text: JSON lists (pads, box) become space-separated numbers, JSON true/false words."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value).strip()


def _job(number: int, row: Dict[str, Any], folder: Path, base: LipSyncOptions, source: str) -> Job:
    row = {_column(key): value for key, value in row.items()}
    _check_columns(row, source, number)
    cells = {key: _cell(value) for key, value in row.items() if _cell(value) != ""}
    where = f"{source} row {number}"
    if FACE not in cells:
        raise ManifestError(f"{where}, column 'face': empty (every job needs a face picture or video)")
    if (AUDIO in cells) == (TEXT in cells):
        raise ManifestError(f"{where}, columns 'audio' and 'text': give exactly one of them "
                            f"({'both are filled' if AUDIO in cells else 'both are empty'})")  # fmt: skip
    for column in TEXT_ONLY_COLUMNS:
        if column in cells and AUDIO in cells:
            raise ManifestError(f"{where}, column {column!r}: only for text rows (this row has an audio file)")
    audio = _path(cells, AUDIO, folder, where) if AUDIO in cells else None
    return Job(row=number, face=_path(cells, FACE, folder, where), audio=audio, text=cells.get(TEXT),
               voice=cells.get(VOICE, tts.DEFAULT_VOICE), rate=_rate(cells, where), outfile=_outfile(cells, where),
               options=_options(cells, base, where))  # fmt: skip


def _path(cells: Dict[str, str], column: str, folder: Path, where: str) -> Path:
    """A column's file, relative to the manifest's folder; a web address is this row's error, said before any job."""
    text = cells[column]
    if paths.URL.match(text):
        raise ManifestError(f"{where}, column {column!r}: {text} is a web address; lipsync reads files on this "
                            "machine, so download it first")
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _rate(cells: Dict[str, str], where: str) -> int:
    try:
        rate = int(cells.get(RATE, "0").rstrip("%"))
    except ValueError:
        raise ManifestError(f"{where}, column 'rate': expected a whole number of % (got {cells[RATE]!r})") from None
    if not tts.MIN_RATE <= rate <= tts.MAX_RATE:
        raise ManifestError(f"{where}, column 'rate': between {tts.MIN_RATE} and {tts.MAX_RATE} (got {rate})")
    if TEXT in cells:
        try:
            tts.check_request(cells[TEXT], cells.get(VOICE, tts.DEFAULT_VOICE), rate)
        except LipSyncError as exc:
            raise ManifestError(f"{where}, column '{VOICE if VOICE in cells else TEXT}': {exc}") from None
    return rate


def _outfile(cells: Dict[str, str], where: str) -> Optional[Path]:
    if OUTFILE not in cells:
        return None
    path = Path(cells[OUTFILE]).expanduser()
    try:
        containers.container_for(path)
    except LipSyncError as exc:
        raise ManifestError(f"{where}, column 'outfile': {exc}") from None
    return path


def _options(cells: Dict[str, str], base: LipSyncOptions, where: str) -> LipSyncOptions:
    """The batch's options with this row's option columns on top; each value parsed as the CLI parses it."""
    changes = {}
    for name in option_names():
        if name in cells:
            try:
                changes[name] = option_value(name, cells[name])
            except LipSyncError as exc:
                raise ManifestError(f"{where}, column {name!r}: {exc}") from None
    try:
        return replace(base, **changes)
    except LipSyncError as exc:
        column = next((name for name in changes if name in str(exc)), next(iter(changes), "?"))
        raise ManifestError(f"{where}, column {column!r}: {exc}") from None


def place_outputs(jobs: Sequence[Job], outdir: Path) -> List[Job]:
    """Jobs with absolute output paths: a relative outfile goes under outdir; a row without one gets a unique
    name from its face and its audio (or first words of its text). Two rows writing one file is a ManifestError."""
    taken: Set[Path] = set()
    placed = []
    for job in jobs:
        if job.outfile is not None:
            out = job.outfile if job.outfile.is_absolute() else outdir / job.outfile
            out = out.resolve()
            if out in taken:
                raise ManifestError(f"row {job.row}, column 'outfile': {out.name} is already another row's output")
        else:
            out = _unique(outdir.resolve(), _default_stem(job), taken | _named(jobs, outdir))
        taken.add(out)
        placed.append(replace(job, outfile=out))
    return placed


def _named(jobs: Sequence[Job], outdir: Path) -> Set[Path]:
    return {(j.outfile if j.outfile.is_absolute() else outdir / j.outfile).resolve() for j in jobs if j.outfile}


def _default_stem(job: Job) -> str:
    if job.audio is not None:
        speech = job.audio.stem
    else:
        speech = "-".join((job.text or "").split()[:SLUG_WORDS])
    return SLUG_JUNK.sub("_", f"{job.face.stem}-{speech}")[:SLUG_CHARS].strip("_-") or "video"


def _unique(folder: Path, stem: str, taken: Set[Path]) -> Path:
    candidate, count = folder / f"{stem}{OUTPUT_SUFFIX}", 1
    while candidate in taken:
        count += 1
        candidate = folder / f"{stem}-{count}{OUTPUT_SUFFIX}"
    return candidate
