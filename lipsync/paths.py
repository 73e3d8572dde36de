"""The paths of one job: inputs that exist and are not empty, an output (.mp4, .mov, .mkv or .webm) that overwrites
neither of them, in a folder that can be made, and taking back the folders a failed run made."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple, Union

from .containers import SUFFIX_LIST, container_for
from .errors import LipSyncError

# https://…, s3://…: an address, not a path (a Path of it keeps one slash; a scheme of one letter is a Windows drive)
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")

PathLike = Union[str, Path]


def check_paths(face: PathLike, audio_path: PathLike, outfile: PathLike) -> Tuple[Path, Path, Path]:
    """Inputs must be non-empty files; the output a video file (containers.SUFFIXES) that is neither of them, in a
    folder we can make."""
    face_p, audio_p, out_p = check_input(face, "face"), check_input(audio_path, "audio"), Path(outfile).expanduser()
    if out_p.is_dir():
        raise LipSyncError(f"the output {out_p} is a folder; give a file name in it ending in {SUFFIX_LIST}")
    container_for(out_p)
    for what, path in (("face", face_p), ("audio", audio_p)):
        if out_p.exists() and out_p.samefile(path):
            raise LipSyncError(f"the output {out_p.name} is the {what} input: give another output name, "
                               "so the input is not overwritten")
    check_creatable(out_p.parent)
    return face_p, audio_p, out_p.resolve()


def check_input(given: PathLike, what: str) -> Path:
    """An input file that exists and is not empty (a web address is not one)."""
    if URL.match(os.fspath(given)) and not Path(given).exists():
        raise LipSyncError(f"the {what} {os.fspath(given)} is a web address: lipsync reads files on this machine, so "
                           "download it first (for example with curl -LO, or your browser's Save as)")
    path = Path(given).expanduser()
    if path.is_dir():
        raise LipSyncError(f"the {what} {path} is a folder: give a file in it")
    if not path.is_file():
        raise LipSyncError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise LipSyncError(f"the {what} file {path.name} is empty (0 bytes); was the upload or copy complete?")
    return path


def missing_folders(folder: Path) -> List[Path]:
    """The folders that do not exist yet on the way to `folder`, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def check_creatable(folder: Path) -> None:
    """The output folder exists or can be made: its nearest existing ancestor is a writable folder."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise LipSyncError(f"cannot create the output folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LipSyncError(f"cannot write the output into {folder}: {existing} is not writable")


def remove_empty(folders: List[Path]) -> None:
    """Take back the folders a failed run made for its output (deepest first), if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
