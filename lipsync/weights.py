"""Known weights as a data table; finding them (models dir, cache) or downloading them; the generator loader.

Lookup order for a known name:
  1. `$LIPSYNC_MODELS/<filename>`: a directory you fill yourself (offline machines, shared drives);
  2. the cache: Hugging Face Hub files in the hub's own cache (`HF_HUB_CACHE`), URL files in
     `$LIPSYNC_CACHE`, else `$XDG_CACHE_HOME/lipsync`, else `~/.cache/lipsync`;
  3. a download into that cache (lipsync.download), checked against its sha256 when one is published.
Every entry says how it is pinned: by sha256 (and, for Hub files, by commit), or why it cannot be.
Messages here reach the web app too: they name files and folders, and command-line flags only as such.
"""

from __future__ import annotations

import functools
import http.client
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Literal, Optional, Tuple, get_args

from . import download
from .checkpoint import assign_state_dict, read_state_dict
from .download import HUB_OFFLINE, NO_HUB_LIBRARY, HubFile, download_url, file_sha256, hub_library  # noqa: F401
from .errors import LipSyncError, first_line

if TYPE_CHECKING:
    from .model import Wav2Lip

WeightsName = Literal["wav2lip_hq", "wav2lip_gan", "wav2lip", "s3fd", "s3fd_paddle", "gpen512"]
WeightsKind = Literal["wav2lip", "s3fd", "gpen"]
WEIGHTS_NAMES: Tuple[str, ...] = get_args(WeightsName)
WEIGHTS_KINDS: Tuple[str, ...] = get_args(WeightsKind)
DEFAULT_WAV2LIP = "wav2lip_hq"
DEFAULT_S3FD = "s3fd"
DEFAULT_GPEN = "gpen512"

MODELS_ENV = "LIPSYNC_MODELS"  # directory of weights files under their table filenames, searched first
CACHE_ENV = "LIPSYNC_CACHE"  # lipsync's cache directory (URL downloads, static exports)
XDG_CACHE_ENV = "XDG_CACHE_HOME"
CACHE_DIRNAME = "lipsync"
LOADED_MODELS_KEPT = 2  # generators kept loaded per process (each ~150 MB)
COMMIT_CHARS = 12  # of a pinned commit, as the doctor shows it

KIND_LABELS = {"wav2lip": "Wav2Lip generator", "s3fd": "S3FD face detector", "gpen": "GPEN face enhancer"}
# The command-line flag that takes a file of each kind; messages name it only as "(… on the command line)".
PATH_OPTIONS = {"wav2lip": "--checkpoint_path", "s3fd": "--detector_weights", "gpen": "--enhancer_weights"}
MISMATCH_HINTS = {
    "wav2lip": "Is this a Wav2Lip generator checkpoint (wav2lip.pth, wav2lip_gan.pth, wav2lip_hq.pdparams)? "
    "S3FD weights are the face detector's (--detector_weights on the command line); "
    "lip-sync expert and discriminator checkpoints cannot generate.",
    "s3fd": "Is this an S3FD face-detector file (s3fd.pth, s3fd_paddle.pdparams)? "
    "Wav2Lip weights are the generator's (--checkpoint_path on the command line).",
    "gpen": "Is this a GPEN face-enhancement file (PaddleGAN's GPEN-512.pdparams)? "
    "Wav2Lip weights are the generator's (--checkpoint_path on the command line), "
    "S3FD weights the face detector's (--detector_weights).",
}

GPEN_LICENCE = "GPEN (yangxy/GPEN): academic and non-commercial use only; PaddleGAN's conversion (code Apache-2.0)"
RESEARCH_ONLY = "LRS2-trained: personal/research/non-commercial use only (Rudrabha/Wav2Lip licence)"

WAV2LIP_HUB_REPO = "camenduru/Wav2Lip"  # mirror of Rudrabha's checkpoints
# No commit of camenduru/Wav2Lip could be found (searched public code, Space READMEs and notebooks, 2026-12:
# every use fetches `resolve/main`), so its files follow the main branch and their sha256 pins the content.
HUB_UNPINNED = f"no commit of {WAV2LIP_HUB_REPO} known: its main branch is fetched, the sha256 pins the content"
# PaddleGAN publishes no checksum for its files, and none is stated anywhere we could search; this machine
# cannot download them to hash them. A damaged or replaced download of these is therefore not caught.
PADDLEGAN_UNVERIFIED = "PaddleGAN publishes none: a changed or damaged download is not caught"


@dataclass(frozen=True)
class WeightsEntry:
    """One known weights file: what it is, where to get it, how to check it.

    Every file is pinned by sha256 where one is known; where none is, `unverified` says why (required).
    """

    name: str
    filename: str  # its name in $LIPSYNC_MODELS and in the cache
    kind: WeightsKind
    hub: Optional[HubFile] = None  # fetched from here first
    url: Optional[str] = None  # a plain URL: the source when there is no hub file, else a fallback
    sha256: Optional[str] = None  # None: no published hash, the file is not checked (see `unverified`)
    size_mb: int = 0  # approximate download size
    licence: str = ""
    also_named: Tuple[str, ...] = ()  # other filenames accepted in $LIPSYNC_MODELS
    unverified: str = ""  # why there is no sha256 (required when sha256 is None)

    def __post_init__(self) -> None:
        if self.sha256 is None and not self.unverified:
            raise ValueError(f"{self.name}: no sha256 and no reason why (unverified=…)")
        if self.hub is not None and self.hub.revision is None and not self.hub.unpinned:
            raise ValueError(f"{self.name}: a hub file without a commit and no reason why (unpinned=…)")

    @property
    def download_url(self) -> str:
        """Where a person can fetch it by hand."""
        return self.hub.url if self.hub else str(self.url)


WEIGHTS: Dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in (
        WeightsEntry(
            "wav2lip_hq", "wav2lip_hq.pdparams", "wav2lip",
            url="https://paddlegan.bj.bcebos.com/models/wav2lip_hq.pdparams",
            size_mb=145, licence=f"PaddleGAN release (code Apache-2.0); {RESEARCH_ONLY}",
            unverified=PADDLEGAN_UNVERIFIED,
        ),
        WeightsEntry(
            "wav2lip_gan", "wav2lip_gan.pth", "wav2lip",
            hub=HubFile(WAV2LIP_HUB_REPO, "checkpoints/wav2lip_gan.pth", unpinned=HUB_UNPINNED),
            # 435801865 bytes: the value installers that fetch this very file from camenduru/Wav2Lip check.
            sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
            size_mb=436, licence=RESEARCH_ONLY,
        ),
        WeightsEntry(
            "wav2lip", "wav2lip.pth", "wav2lip",
            hub=HubFile(WAV2LIP_HUB_REPO, "checkpoints/wav2lip.pth", unpinned=HUB_UNPINNED),
            # Rudrabha's wav2lip.pth, 435807851 bytes: the hub blob (hub blobs are named by their sha256) that
            # camenduru/SadTalker-hf checkpoints/wav2lip.pth links to in vinthony/SadTalker; the same value and
            # size are stated for the copy on the hub at rippertnt/wav2lip, and that size for SadTalker's release.
            sha256="b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37",
            size_mb=436, licence=RESEARCH_ONLY,
        ),
        WeightsEntry(
            "s3fd", "s3fd.pth", "s3fd",
            hub=HubFile(WAV2LIP_HUB_REPO, "face_detection/detection/sfd/s3fd.pth", unpinned=HUB_UNPINNED),
            url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
            # face-alignment names its files after their sha256 (s3fd-619a316812.pth); 89843225 bytes.
            sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
            size_mb=90, licence="S3FD weights as distributed with face-alignment (BSD-3-Clause code); research use",
            also_named=("s3fd-619a316812.pth",),
        ),
        WeightsEntry(
            "s3fd_paddle", "s3fd_paddle.pdparams", "s3fd",
            url="https://paddlegan.bj.bcebos.com/models/s3fd_paddle.pdparams",
            size_mb=90, licence="PaddleGAN's conversion of the S3FD weights (code Apache-2.0); research use",
            unverified=PADDLEGAN_UNVERIFIED,
        ),
        WeightsEntry(
            "gpen512", "GPEN-512.pdparams", "gpen",
            url="https://paddlegan.bj.bcebos.com/models/GPEN-512.pdparams",
            size_mb=287, licence=GPEN_LICENCE, unverified=PADDLEGAN_UNVERIFIED,
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class DownloadSource:
    """One place a known weights file is downloaded from, and what rules it out before any network use."""

    url: str
    problem: Optional[str] = None  # None: usable if its host answers


@dataclass(frozen=True)
class WeightsStatus:
    """Whether one known weights file is on this machine, where, and whether it checks out."""

    name: str
    kind: str
    path: Optional[Path]  # None: not on this machine
    where: str  # "models dir", "hub cache", "cache" or "missing"
    verified: Optional[bool]  # sha256 matches / differs; None when no hash is published or the file is missing


def available_models(kind: Optional[str] = None) -> List[str]:
    """The known weights names, optionally only those of one kind ('wav2lip', 's3fd' or 'gpen')."""
    return [name for name, entry in WEIGHTS.items() if kind is None or entry.kind == kind]


def pinning(name: str) -> str:
    """How a known file is pinned, in words: by commit and/or sha256, and, where not, why not."""
    entry = WEIGHTS[name]
    hub = entry.hub
    parts = []
    if hub is not None and hub.revision:
        parts.append(f"pinned by commit {hub.revision[:COMMIT_CHARS]}")
    parts.append("pinned by sha256" if entry.sha256 else f"NOT verifiable: no published sha256 ({entry.unverified})")
    if hub is not None and not hub.revision:
        parts.append(f"not pinned by commit ({hub.unpinned})")
    return "; ".join(parts)


def models_dir() -> Optional[Path]:
    """$LIPSYNC_MODELS, if set."""
    value = os.environ.get(MODELS_ENV, "").strip()
    return Path(value).expanduser().absolute() if value else None


def cache_dir() -> Path:
    """lipsync's cache: $LIPSYNC_CACHE, else $XDG_CACHE_HOME/lipsync, else ~/.cache/lipsync."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get(XDG_CACHE_ENV, "").strip()
    base = Path(xdg).expanduser().absolute() if xdg else Path.home() / ".cache"
    return base / CACHE_DIRNAME


def resolve_weights(source: str, kind: str) -> Path:
    """A weights file for `source`: an existing file path, or a known name found locally or downloaded."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    entry = WEIGHTS.get(source)
    if entry is None:
        raise LipSyncError(_unknown_source_message(source, path))
    if entry.kind != kind:
        raise LipSyncError(
            f"{source} holds {KIND_LABELS[entry.kind]} weights, not {KIND_LABELS.get(kind, kind)} weights; "
            f"choose one of: {', '.join(available_models(kind))}"
        )
    return _local_or_download(entry)


def _unknown_source_message(source: str, path: Path) -> str:
    known = "; ".join(f"{', '.join(available_models(k))} ({KIND_LABELS[k]})" for k in WEIGHTS_KINDS)
    if path.is_dir():
        return f"{source} is a directory; give a weights file (.pth or .pdparams) or one of the known names: {known}"
    looks_like_path = os.sep in source or "/" in source or path.suffix in (".pth", ".pdparams", ".pt", ".tar")
    what = f"No weights file at {path.absolute()}" if looks_like_path else f"Unknown weights name {source!r}"
    return f"{what}. Known names: {known}; or give the path of a .pth/.pdparams file."


def _local_or_download(entry: WeightsEntry) -> Path:
    own = _models_dir_file(entry)
    if own is not None:
        _require_published(own, entry)
        return own
    for path, where in _cached_files(entry):
        if download.sha256_matches(path, entry.sha256) is not False:
            return path
        download.delete_download(path, where)  # a damaged cache copy: fetch it again
    return _download(entry)


def _models_dir_file(entry: WeightsEntry) -> Optional[Path]:
    directory = models_dir()
    if directory is None:
        return None
    for filename in (entry.filename, *entry.also_named):
        if (directory / filename).is_file():
            return directory / filename
    return None


def _require_published(path: Path, entry: WeightsEntry) -> None:
    """A file in $LIPSYNC_MODELS under a known name must be that file; we never delete it."""
    if download.sha256_matches(path, entry.sha256) is False:
        raise LipSyncError(
            f"{path} is not the published {entry.filename}: its sha256 differs from {entry.sha256}. "
            f"Replace it with the file from {entry.download_url}, or, to use it anyway, give its path as the weights "
            f"file ({PATH_OPTIONS[entry.kind]} {path} on the command line)."
        )


def _cached_files(entry: WeightsEntry) -> List[Tuple[Path, str]]:
    """Copies already downloaded: the hub cache (no network), then lipsync's cache."""
    found = []
    if entry.hub is not None:
        hub_copy = download.hub_cached(entry.hub)
        if hub_copy is not None:
            found.append((hub_copy, download.HUB_CACHE))
    if entry.url is not None and (cache_dir() / entry.filename).is_file():
        found.append((cache_dir() / entry.filename, "cache"))
    return found


def download_sources(name: str) -> List[DownloadSource]:
    """Where a known name is downloaded from, in the order tried (the Hub at its configured endpoint first)."""
    entry = WEIGHTS[name]
    sources = []
    if entry.hub is not None:
        sources.append(DownloadSource(entry.hub.url_at(download.hub_endpoint()), download.hub_library_problem()))
    if entry.url is not None:
        sources.append(DownloadSource(entry.url))
    return sources


def _download(entry: WeightsEntry) -> Path:
    """Fetch from the hub, else from the URL; no network → an error saying where to put the file by hand."""
    reasons = []
    if entry.hub is not None:
        problem = download.hub_library_problem() or download.hub_lookup_problem()
        if problem is None:
            try:
                return download.hub_download(entry.hub, entry.sha256, entry.filename)
            except download.hub_errors() as exc:
                problem = first_line(exc)
        reasons.append(problem)
    if entry.url is not None:
        try:
            return download_url(entry.url, cache_dir() / entry.filename, entry.sha256)
        except (OSError, http.client.HTTPException) as exc:
            reasons.append(first_line(exc))
    if entry.url is None and hub_library() is None:
        raise LipSyncError(_no_hub_library_message(entry))
    raise LipSyncError(_offline_message(entry, "; ".join(reasons)))


def _offline_message(entry: WeightsEntry, reason: str) -> str:
    mirror = f" (or {entry.url})" if entry.hub and entry.url else ""
    return (
        f"Could not download {entry.filename} (no network? {reason}). Download it from {entry.download_url}{mirror} "
        f"and {_by_hand(entry.name)}."
    )


def _no_hub_library_message(entry: WeightsEntry) -> str:
    return (
        f"{entry.filename} comes from the Hugging Face Hub, and {NO_HUB_LIBRARY}. Install it, or download the file "
        f"from {entry.download_url} and {_by_hand(entry.name)}."
    )


def _by_hand(name: str) -> str:
    """The end of a sentence saying where to put a known file by hand: '… put it in $LIPSYNC_MODELS (…), or …'."""
    flag = PATH_OPTIONS[WEIGHTS[name].kind]
    return f"put it in {models_dir_text()}, or give another weights file ({flag} /path/to/file on the command line)"


def models_dir_text() -> str:
    """'$LIPSYNC_MODELS (currently /its/folder)', or '… (currently not set)'."""
    directory = models_dir()
    return f"${MODELS_ENV} (currently {directory if directory else 'not set'})"


def cached_status() -> List[WeightsStatus]:
    """For each known name: where it is on this machine (without downloading) and whether it checks out."""
    statuses = []
    for entry in WEIGHTS.values():
        own = _models_dir_file(entry)
        found = [(own, "models dir")] if own is not None else _cached_files(entry)
        if found:
            path, where = found[0]
            verified = download.sha256_matches(path, entry.sha256)
            statuses.append(WeightsStatus(entry.name, entry.kind, path, where, verified))
        else:
            statuses.append(WeightsStatus(entry.name, entry.kind, None, "missing", None))
    return statuses


def load_wav2lip(source: str = DEFAULT_WAV2LIP) -> "Wav2Lip":
    """The Wav2Lip generator with weights from a known name or a .pth/.pdparams file, in eval mode.

    Loaded once per file (path, size and mtime) and shared within the process: callers must not
    change it (no train(), set_value, paddle.jit.to_static or in-place edits); build_wav2lip gives a
    fresh copy for that.
    """
    path = resolve_weights(source, "wav2lip").resolve()
    stat = path.stat()
    return _load_wav2lip(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=LOADED_MODELS_KEPT)
def _load_wav2lip(path: Path, size: int, mtime_ns: int) -> "Wav2Lip":
    return build_wav2lip(str(path))


def build_wav2lip(source: str = DEFAULT_WAV2LIP) -> "Wav2Lip":
    """A new Wav2Lip generator, in eval mode, with weights from a known name or a .pth/.pdparams file.

    Not cached and not shared: the caller owns it (the engine traces one for export, then drops it)."""
    from .model import Wav2Lip

    path = resolve_weights(source, "wav2lip")
    model = Wav2Lip()
    assign_state_dict(model, read_state_dict(path), source=str(path), hint=MISMATCH_HINTS["wav2lip"])
    model.eval()
    return model
