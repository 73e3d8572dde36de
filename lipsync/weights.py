"""Known weights as a data table; finding them (models dir, cache) or downloading them; the generator loader.

Lookup order for a known name:
  1. `$LIPSYNC_MODELS/<filename>`: a directory you fill yourself (offline machines, shared drives);
  2. the cache: Hugging Face Hub files in the hub's own cache (`HF_HUB_CACHE`), URL files in
     `$LIPSYNC_CACHE`, else `$XDG_CACHE_HOME/lipsync`, else `~/.cache/lipsync`;
  3. a download into that cache, checked against its sha256 when one is published.
Hub files need huggingface_hub (Spaces preinstall it; requirements.txt leaves it out); plain URLs do not.
Messages here reach the web app too: they name files and folders, and command-line flags only as such.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO, Dict, List, Literal, Optional, Tuple, Type, get_args

from tqdm import tqdm

from .checkpoint import assign_state_dict, read_state_dict
from .errors import LipSyncError

if TYPE_CHECKING:
    from .model import Wav2Lip

WeightsName = Literal["wav2lip_hq", "wav2lip_gan", "wav2lip", "s3fd", "s3fd_paddle"]
WeightsKind = Literal["wav2lip", "s3fd"]
WEIGHTS_NAMES: Tuple[str, ...] = get_args(WeightsName)
WEIGHTS_KINDS: Tuple[str, ...] = get_args(WeightsKind)
DEFAULT_WAV2LIP = "wav2lip_hq"
DEFAULT_S3FD = "s3fd"

MODELS_ENV = "LIPSYNC_MODELS"  # directory of weights files under their table filenames, searched first
CACHE_ENV = "LIPSYNC_CACHE"  # lipsync's cache directory (URL downloads, static exports)
XDG_CACHE_ENV = "XDG_CACHE_HOME"
CACHE_DIRNAME = "lipsync"
HUB_FILE_URL = "https://huggingface.co/{repo}/resolve/{revision}/{path}"
HUB_DEFAULT_REVISION = "main"
PART_SUFFIX = ".part"  # an unfinished download; never under the final name
CHUNK_BYTES = 1 << 20  # read/hash/download step (1 MiB)
DOWNLOAD_TIMEOUT_S = 60  # seconds without data before a download gives up
USER_AGENT = "lipsync (Wav2Lip on PaddlePaddle)"
REASON_CHARS = 160  # of a network error quoted in ours
LOADED_MODELS_KEPT = 2  # generators kept loaded per process (each ~150 MB)

KIND_LABELS = {"wav2lip": "Wav2Lip generator", "s3fd": "S3FD face detector"}
# The command-line flag that takes a file of each kind; messages name it only as "(… on the command line)".
PATH_OPTIONS = {"wav2lip": "--checkpoint_path", "s3fd": "--detector_weights"}
MISMATCH_HINTS = {
    "wav2lip": "Is this a Wav2Lip generator checkpoint (wav2lip.pth, wav2lip_gan.pth, wav2lip_hq.pdparams)? "
    "S3FD weights are the face detector's (--detector_weights on the command line); "
    "lip-sync expert and discriminator checkpoints cannot generate.",
    "s3fd": "Is this an S3FD face-detector file (s3fd.pth, s3fd_paddle.pdparams)? "
    "Wav2Lip weights are the generator's (--checkpoint_path on the command line).",
}
HUB_LIBRARY = "huggingface_hub"
NO_HUB_LIBRARY = f"{HUB_LIBRARY} is not installed (pip install {HUB_LIBRARY})"
HUB_OFFLINE = "HF_HUB_OFFLINE is set"

RESEARCH_ONLY = "LRS2-trained: personal/research/non-commercial use only (Rudrabha/Wav2Lip licence)"


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub model repo; revision None means the repo's main branch."""

    repo_id: str
    path: str
    revision: Optional[str] = None

    @property
    def url(self) -> str:
        return HUB_FILE_URL.format(repo=self.repo_id, revision=self.revision or HUB_DEFAULT_REVISION, path=self.path)


@dataclass(frozen=True)
class WeightsEntry:
    """One known weights file: what it is, where to get it, how to check it."""

    name: str
    filename: str  # its name in $LIPSYNC_MODELS and in the cache
    kind: WeightsKind
    hub: Optional[HubFile] = None  # fetched from here first
    url: Optional[str] = None  # a plain URL: the source when there is no hub file, else a fallback
    sha256: Optional[str] = None  # None: no published hash, the file is not checked
    size_mb: int = 0  # approximate download size
    licence: str = ""
    also_named: Tuple[str, ...] = ()  # other filenames accepted in $LIPSYNC_MODELS

    @property
    def download_url(self) -> str:
        """Where a person can fetch it by hand."""
        return self.hub.url if self.hub else str(self.url)


WAV2LIP_HUB_REPO = "camenduru/Wav2Lip"  # mirror of Rudrabha's checkpoints; no commit pinned (sha256 pins content)

WEIGHTS: Dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in (
        WeightsEntry(
            "wav2lip_hq", "wav2lip_hq.pdparams", "wav2lip",
            url="https://paddlegan.bj.bcebos.com/models/wav2lip_hq.pdparams",
            size_mb=145, licence=f"PaddleGAN release (code Apache-2.0); {RESEARCH_ONLY}",
        ),
        WeightsEntry(
            "wav2lip_gan", "wav2lip_gan.pth", "wav2lip",
            hub=HubFile(WAV2LIP_HUB_REPO, "checkpoints/wav2lip_gan.pth"),
            sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
            size_mb=436, licence=RESEARCH_ONLY,
        ),
        WeightsEntry(
            "wav2lip", "wav2lip.pth", "wav2lip",
            hub=HubFile(WAV2LIP_HUB_REPO, "checkpoints/wav2lip.pth"),
            size_mb=436, licence=RESEARCH_ONLY,
        ),
        WeightsEntry(
            "s3fd", "s3fd.pth", "s3fd",
            hub=HubFile(WAV2LIP_HUB_REPO, "face_detection/detection/sfd/s3fd.pth"),
            url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
            sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
            size_mb=90, licence="S3FD weights as distributed with face-alignment (BSD-3-Clause code); research use",
            also_named=("s3fd-619a316812.pth",),
        ),
        WeightsEntry(
            "s3fd_paddle", "s3fd_paddle.pdparams", "s3fd",
            url="https://paddlegan.bj.bcebos.com/models/s3fd_paddle.pdparams",
            size_mb=90, licence="PaddleGAN's conversion of the S3FD weights (code Apache-2.0); research use",
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
    """The known weights names, optionally only those of one kind ('wav2lip' or 's3fd')."""
    return [name for name, entry in WEIGHTS.items() if kind is None or entry.kind == kind]


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
        if _sha256_matches(path, entry) is not False:
            return path
        _delete_download(path, where)  # a damaged cache copy: fetch it again
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
    if _sha256_matches(path, entry) is False:
        raise LipSyncError(
            f"{path} is not the published {entry.filename}: its sha256 differs from {entry.sha256}. "
            f"Replace it with the file from {entry.download_url}, or, to use it anyway, give its path as the weights "
            f"file ({PATH_OPTIONS[entry.kind]} {path} on the command line)."
        )


def _cached_files(entry: WeightsEntry) -> List[Tuple[Path, str]]:
    """Copies already downloaded: the hub cache (no network), then lipsync's cache."""
    found = []
    if entry.hub is not None:
        hub_copy = _hub_cached(entry.hub)
        if hub_copy is not None:
            found.append((hub_copy, "hub cache"))
    if entry.url is not None and (cache_dir() / entry.filename).is_file():
        found.append((cache_dir() / entry.filename, "cache"))
    return found


def _hub_cached(hub: HubFile) -> Optional[Path]:
    library = hub_library()
    if library is None:
        return None
    try:
        return Path(library.hf_hub_download(hub.repo_id, hub.path, revision=hub.revision, local_files_only=True))
    except _hub_errors():
        return None


def hub_library() -> Optional[ModuleType]:
    """huggingface_hub (with its constants module loaded: the package loads it lazily), or None when not installed."""
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401
    except ImportError:
        return None
    return huggingface_hub


def _hub_library_problem() -> Optional[str]:
    """What rules out Hub downloads before any network use: no huggingface_hub, or its offline mode."""
    library = hub_library()
    if library is None:
        return NO_HUB_LIBRARY
    return HUB_OFFLINE if getattr(library.constants, "HF_HUB_OFFLINE", False) else None


def download_sources(name: str) -> List[DownloadSource]:
    """Where a known name is downloaded from, in the order tried (the Hub at its configured endpoint first)."""
    entry = WEIGHTS[name]
    sources = []
    if entry.hub is not None:
        library = hub_library()
        endpoint = library.constants.ENDPOINT if library is not None else None
        sources.append(DownloadSource(_hub_url(entry.hub, endpoint), _hub_library_problem()))
    if entry.url is not None:
        sources.append(DownloadSource(entry.url))
    return sources


def _hub_url(hub: HubFile, endpoint: Optional[str]) -> str:
    """The file's URL at `endpoint` (HF_ENDPOINT, when the hub library set one), else at huggingface.co."""
    if not endpoint:
        return hub.url
    return f"{endpoint.rstrip('/')}/{hub.repo_id}/resolve/{hub.revision or HUB_DEFAULT_REVISION}/{hub.path}"


def _hub_errors() -> Tuple[Type[BaseException], ...]:
    """What hf_hub_download raises when the hub is unreachable (its HTTP library varies by version)."""
    errors: List[Type[BaseException]] = [OSError]
    for library in ("httpx", "httpx2", "requests"):
        error = getattr(sys.modules.get(library), "HTTPError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _download(entry: WeightsEntry) -> Path:
    """Fetch from the hub, else from the URL; no network → an error saying where to put the file by hand."""
    reasons = []
    if entry.hub is not None:
        problem = _hub_library_problem() or _hub_lookup_problem()
        if problem is None:
            try:
                return _download_from_hub(entry, entry.hub)
            except _hub_errors() as exc:
                problem = _reason(exc)
        reasons.append(problem)
    if entry.url is not None:
        try:
            return download_url(entry.url, cache_dir() / entry.filename, entry.sha256)
        except (OSError, http.client.HTTPException) as exc:
            reasons.append(_reason(exc))
    if entry.url is None and hub_library() is None:
        raise LipSyncError(_no_hub_library_message(entry))
    raise LipSyncError(_offline_message(entry, "; ".join(reasons)))


def _hub_lookup_problem() -> Optional[str]:
    return None if _hub_resolves() else "cannot look up the Hugging Face Hub's address"


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves: offline, the hub client would retry for half a minute first."""
    import huggingface_hub.constants

    host = urllib.parse.urlsplit(huggingface_hub.constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True


def _reason(exc: BaseException) -> str:
    """The first sentence of an error, to quote in ours."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0][:REASON_CHARS] if text else type(exc).__name__


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


def _download_from_hub(entry: WeightsEntry, hub: HubFile) -> Path:
    import huggingface_hub

    path = Path(huggingface_hub.hf_hub_download(hub.repo_id, hub.path, revision=hub.revision))
    if _sha256_matches(path, entry) is False:
        _delete_download(path, "hub cache")
        raise LipSyncError(_checksum_message(entry.filename, hub.url))
    return path


def _checksum_message(filename: str, url: str) -> str:
    return (
        f"The download of {filename} from {url} does not match its published sha256 (damaged in transit, "
        "or the file there changed). It was deleted; try again, or fetch it by hand."
    )


def download_url(url: str, dest: Path, sha256: Optional[str] = None) -> Path:
    """Stream `url` to `dest` with a byte progress bar; the final name appears only once the file is whole and checked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(prefix=f"{dest.name}.", suffix=PART_SUFFIX, dir=dest.parent)
    part = Path(part_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _stream(url, out, dest.name)
        if sha256 is not None and digest != sha256:
            raise LipSyncError(_checksum_message(dest.name, url))
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    _VERIFIED[_file_identity(dest)] = digest  # hashed while downloading: no second pass
    return dest


def _stream(url: str, out: BinaryIO, label: str) -> str:
    """Copy the response body to `out`, returning its sha256; a short body raises ConnectionError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise ConnectionError(f"the connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _delete_download(path: Path, where: str) -> None:
    """Remove a bad downloaded copy (for a hub file: its blob too, so the hub fetches it anew)."""
    if where == "hub cache":
        path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)


# sha256 results by (path, size, mtime): a 436 MB file is hashed once per process, not on every lookup.
_VERIFIED: Dict[Tuple[str, int, int], str] = {}


def _file_identity(path: Path) -> Tuple[str, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (str(path), -1, -1)
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _sha256_matches(path: Path, entry: WeightsEntry) -> Optional[bool]:
    """True/False when the entry has a published sha256, None when it has none."""
    if entry.sha256 is None:
        return None
    identity = _file_identity(path)
    if identity not in _VERIFIED:
        _VERIFIED[identity] = file_sha256(path)
    return _VERIFIED[identity] == entry.sha256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_status() -> List[WeightsStatus]:
    """For each known name: where it is on this machine (without downloading) and whether it checks out."""
    statuses = []
    for entry in WEIGHTS.values():
        own = _models_dir_file(entry)
        found = [(own, "models dir")] if own is not None else _cached_files(entry)
        if found:
            path, where = found[0]
            statuses.append(WeightsStatus(entry.name, entry.kind, path, where, _sha256_matches(path, entry)))
        else:
            statuses.append(WeightsStatus(entry.name, entry.kind, None, "missing", None))
    return statuses


def load_wav2lip(source: str = DEFAULT_WAV2LIP) -> "Wav2Lip":
    """The Wav2Lip generator with weights from a known name or a .pth/.pdparams file, in eval mode.

    Loaded once per file (path, size and mtime) and shared within the process: callers must not
    change it (no train(), set_value or in-place edits); load a fresh copy for that.
    """
    path = resolve_weights(source, "wav2lip").resolve()
    stat = path.stat()
    return _load_wav2lip(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=LOADED_MODELS_KEPT)
def _load_wav2lip(path: Path, size: int, mtime_ns: int) -> "Wav2Lip":
    from .model import Wav2Lip

    model = Wav2Lip()
    assign_state_dict(model, read_state_dict(path), source=str(path), hint=MISMATCH_HINTS["wav2lip"])
    model.eval()
    return model
