"""Fetching one file and checking it: a plain URL streamed to disk, or a Hugging Face Hub file; sha256 checks.

This module knows no weights table: the caller (lipsync.weights) says what to fetch, where, and which
sha256 to expect. A download appears under its final name only once it is whole and checked.
Hub files need huggingface_hub (Spaces preinstall it; requirements.txt leaves it out); plain URLs do not.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Dict, List, Optional, Tuple, Type

from tqdm import tqdm

from .errors import LipSyncError

HUB_FILE_URL = "{endpoint}/{repo}/resolve/{revision}/{path}"
HUB_ENDPOINT = "https://huggingface.co"
HUB_DEFAULT_REVISION = "main"
HUB_CACHE = "hub cache"  # where a hub file was found; a bad copy there is deleted with its blob
PART_SUFFIX = ".part"  # an unfinished download; never under the final name
CHUNK_BYTES = 1 << 20  # read/hash/download step (1 MiB)
DOWNLOAD_TIMEOUT_S = 60  # seconds without data before a download gives up
USER_AGENT = "lipsync (Wav2Lip on PaddlePaddle)"
HUB_LIBRARY = "huggingface_hub"
NO_HUB_LIBRARY = f"{HUB_LIBRARY} is not installed (pip install {HUB_LIBRARY})"
HUB_OFFLINE = "HF_HUB_OFFLINE is set"
HUB_UNRESOLVED = "cannot look up the Hugging Face Hub's address"


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub model repo, at a commit; revision None means the main branch.

    An unpinned file must say why in `unpinned` (the table's tests check it), e.g. that no commit
    of the repo is known and its sha256 pins the content instead.
    """

    repo_id: str
    path: str
    revision: Optional[str] = None
    unpinned: str = ""  # why there is no revision (required when revision is None)

    @property
    def url(self) -> str:
        return self.url_at(HUB_ENDPOINT)

    def url_at(self, endpoint: Optional[str]) -> str:
        """The file's URL at `endpoint` (HF_ENDPOINT, when the hub library set one), else at huggingface.co."""
        base = (endpoint or HUB_ENDPOINT).rstrip("/")
        revision = self.revision or HUB_DEFAULT_REVISION
        return HUB_FILE_URL.format(endpoint=base, repo=self.repo_id, revision=revision, path=self.path)


def hub_library() -> Optional[ModuleType]:
    """huggingface_hub (with its constants module loaded: the package loads it lazily), or None when not installed."""
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401
    except ImportError:
        return None
    return huggingface_hub


def hub_endpoint() -> Optional[str]:
    """The hub library's endpoint (HF_ENDPOINT), or None without the library."""
    library = hub_library()
    return library.constants.ENDPOINT if library is not None else None


def hub_library_problem() -> Optional[str]:
    """What rules out Hub downloads before any network use: no huggingface_hub, or its offline mode."""
    library = hub_library()
    if library is None:
        return NO_HUB_LIBRARY
    return HUB_OFFLINE if getattr(library.constants, "HF_HUB_OFFLINE", False) else None


def hub_lookup_problem() -> Optional[str]:
    return None if _hub_resolves() else HUB_UNRESOLVED


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves: offline, the hub client would retry for half a minute first."""
    import huggingface_hub.constants

    host = urllib.parse.urlsplit(huggingface_hub.constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True


def hub_errors() -> Tuple[Type[BaseException], ...]:
    """What hf_hub_download raises when the hub is unreachable (its HTTP library varies by version)."""
    errors: List[Type[BaseException]] = [OSError]
    for library in ("httpx", "httpx2", "requests"):
        error = getattr(sys.modules.get(library), "HTTPError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def hub_cached(hub: HubFile) -> Optional[Path]:
    """The hub cache's copy of the file at its revision, without network use; None when absent or no library."""
    library = hub_library()
    if library is None:
        return None
    try:
        return Path(library.hf_hub_download(hub.repo_id, hub.path, revision=hub.revision, local_files_only=True))
    except hub_errors():
        return None


def hub_download(hub: HubFile, sha256: Optional[str], filename: str) -> Path:
    """Download through huggingface_hub into its cache; a copy whose sha256 differs is deleted and refused."""
    import huggingface_hub

    path = Path(huggingface_hub.hf_hub_download(hub.repo_id, hub.path, revision=hub.revision))
    if sha256_matches(path, sha256) is False:
        delete_download(path, HUB_CACHE)
        raise LipSyncError(checksum_message(filename, hub.url))
    return path


def checksum_message(filename: str, url: str) -> str:
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
            raise LipSyncError(checksum_message(dest.name, url))
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


def delete_download(path: Path, where: str) -> None:
    """Remove a bad downloaded copy (for a hub file: its blob too, so the hub fetches it anew)."""
    if where == HUB_CACHE:
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


def sha256_matches(path: Path, expected: Optional[str]) -> Optional[bool]:
    """True/False when a sha256 is expected, None when there is none to check against."""
    if expected is None:
        return None
    identity = _file_identity(path)
    if identity not in _VERIFIED:
        _VERIFIED[identity] = file_sha256(path)
    return _VERIFIED[identity] == expected


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
