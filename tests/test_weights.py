"""Tests for lipsync.weights: lookup order, downloads (faked, never the real network), checks, the loader."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import paddle
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from lipsync import download, weights
from lipsync.errors import LipSyncError
from lipsync.model import Wav2Lip
from torchfile_writer import save_torch, torch_names, training_checkpoint

GOOD = b"published weights " * 1000
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"something else entirely " * 700


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def use_entry(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> weights.WeightsEntry:
    """Point a table entry elsewhere (a local server, a test hash) for one test."""
    entry = dataclasses.replace(weights.WEIGHTS[name], **changes)
    monkeypatch.setitem(weights.WEIGHTS, name, entry)
    return entry


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: a snapshot/blob cache on disk and a switchable 'network'."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote: Dict[Tuple[str, str], bytes] = {}
        self.online = False
        self.downloads = 0
        self.revisions: List[Optional[str]] = []  # asked for, cache lookups and downloads alike

    def snapshot_path(self, repo_id: str, filename: str) -> Path:
        return self.root / repo_id.replace("/", "--") / "snapshots" / "main" / filename

    def put_in_cache(self, repo_id: str, filename: str, data: bytes) -> Path:
        blob = self.root / repo_id.replace("/", "--") / "blobs" / sha(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = self.snapshot_path(repo_id, filename)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(blob)
        return link

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: Optional[str] = None,
                        local_files_only: bool = False, **_: object) -> str:  # fmt: skip
        self.revisions.append(revision)
        cached = self.snapshot_path(repo_id, filename)
        if cached.is_file():
            return str(cached)
        if local_files_only or not self.online:
            raise LocalEntryNotFoundError("Cannot find the requested file in the local cache (offline)")
        self.downloads += 1
        return str(self.put_in_cache(repo_id, filename, self.remote[(repo_id, filename)]))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Own cache/home/models dirs, an empty working directory that must stay empty, and no real network."""
    for name in (weights.MODELS_ENV, weights.CACHE_ENV, "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv(weights.XDG_CACHE_ENV, str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    real_urlopen = urllib.request.urlopen

    def local_only(request: urllib.request.Request, *args: object, **kwargs: object) -> object:
        if urllib.parse.urlsplit(request.full_url).hostname != "127.0.0.1":
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    download._VERIFIED.clear()
    weights._load_wav2lip.cache_clear()
    yield tmp_path
    assert list(workdir.iterdir()) == []  # nothing is ever written into the current directory
    weights._load_wav2lip.cache_clear()


@pytest.fixture(autouse=True)
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hf-cache")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the fake's `online` is the network
    monkeypatch.setattr(download, "_hub_resolves", lambda: fake.online)  # no DNS lookups from tests
    return fake


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: FileServer = self.server  # type: ignore[assignment]
        server.requests += 1
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3] if server.cut_short else body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` by path on 127.0.0.1; with `cut_short` it hangs up after a third of each body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: Dict[str, bytes] = {}
        self.cut_short = False
        self.requests = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[FileServer]:
    httpd = FileServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cache_files(isolated: Path) -> list:
    cache = isolated / "xdg" / "lipsync"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_the_table_matches_the_names_and_is_complete() -> None:
    assert tuple(weights.WEIGHTS) == weights.WEIGHTS_NAMES
    for name, entry in weights.WEIGHTS.items():
        assert entry.name == name and entry.kind in weights.WEIGHTS_KINDS
        assert entry.hub or entry.url, name
        assert entry.download_url.startswith("https://"), name
        assert entry.sha256 is None or (len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0), name
        assert entry.size_mb > 0 and entry.licence, name
    assert weights.available_models("s3fd") == ["s3fd", "s3fd_paddle"]
    assert weights.available_models("gpen") == [weights.DEFAULT_GPEN] == ["gpen512"]
    assert "non-commercial" in weights.WEIGHTS["gpen512"].licence
    assert weights.DEFAULT_WAV2LIP in weights.available_models("wav2lip")


def test_every_file_is_pinned_by_sha256_and_commit_or_says_why_not() -> None:
    for name, entry in weights.WEIGHTS.items():
        assert entry.sha256 is not None or entry.unverified, f"{name}: no sha256 and no reason"
        if entry.hub is not None:
            assert entry.hub.revision is not None or entry.hub.unpinned, f"{name}: no commit and no reason"
            assert entry.hub.revision is None or len(entry.hub.revision) == 40 and int(entry.hub.revision, 16) >= 0
    # Only PaddleGAN's files, which come with no published checksum, are unverifiable.
    assert [name for name, entry in weights.WEIGHTS.items() if entry.sha256 is None] == ["wav2lip_hq", "s3fd_paddle",
                                                                                      "gpen512"]


def test_an_entry_cannot_leave_out_a_hash_or_a_commit_silently() -> None:
    with pytest.raises(ValueError, match="no sha256 and no reason"):
        weights.WeightsEntry("x", "x.pth", "wav2lip", url="https://example.org/x.pth")
    with pytest.raises(ValueError, match="hub file without a commit and no reason"):
        weights.WeightsEntry("x", "x.pth", "wav2lip", hub=weights.HubFile("a/b", "x.pth"), sha256=GOOD_SHA)


def test_pinning_says_in_words_how_each_file_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.pinning("wav2lip_hq") == f"NOT verifiable: no published sha256 ({weights.PADDLEGAN_UNVERIFIED})"
    unpinned = f"pinned by sha256; not pinned by commit ({weights.HUB_UNPINNED})"
    assert weights.pinning("wav2lip_gan") == weights.pinning("s3fd") == unpinned
    commit = "0123456789abcdef" * 2 + "01234567"
    use_entry(monkeypatch, "wav2lip", hub=dataclasses.replace(weights.WEIGHTS["wav2lip"].hub, revision=commit))
    assert weights.pinning("wav2lip") == "pinned by commit 0123456789ab; pinned by sha256"


def test_a_pinned_commit_is_asked_for_in_the_cache_and_the_download(monkeypatch: pytest.MonkeyPatch,
                                                                    hub: FakeHub) -> None:  # fmt: skip
    commit = "fedcba9876543210" * 2 + "fedcba98"
    entry = use_entry(monkeypatch, "wav2lip", sha256=GOOD_SHA,
                      hub=dataclasses.replace(weights.WEIGHTS["wav2lip"].hub, revision=commit))  # fmt: skip
    hub.remote[(entry.hub.repo_id, entry.hub.path)] = GOOD
    hub.online = True
    assert weights.resolve_weights("wav2lip", "wav2lip").read_bytes() == GOOD
    assert hub.downloads == 1 and set(hub.revisions) == {commit}
    url = weights.download_sources("wav2lip")[0].url
    assert url == f"https://huggingface.co/{entry.hub.repo_id}/resolve/{commit}/{entry.hub.path}"


# --- lookup ---------------------------------------------------------------------------------------


def test_models_dir_comes_first(isolated: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    entry = use_entry(monkeypatch, "wav2lip_gan", sha256=GOOD_SHA)
    hub.put_in_cache(entry.hub.repo_id, entry.hub.path, GOOD)  # also cached: the models dir still wins
    models = isolated / "models"
    models.mkdir()
    (models / "wav2lip_gan.pth").write_bytes(GOOD)
    monkeypatch.setenv(weights.MODELS_ENV, str(models))
    assert weights.resolve_weights("wav2lip_gan", "wav2lip") == models / "wav2lip_gan.pth"
    assert hub.downloads == 0


def test_models_dir_accepts_face_alignments_s3fd_filename(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry(monkeypatch, "s3fd", sha256=GOOD_SHA)
    (isolated / "models").mkdir()
    (isolated / "models" / "s3fd-619a316812.pth").write_bytes(GOOD)
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    assert weights.resolve_weights("s3fd", "s3fd").name == "s3fd-619a316812.pth"


def test_models_dir_file_with_another_hash_is_refused_not_deleted(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry(monkeypatch, "wav2lip_gan", sha256=GOOD_SHA)
    (isolated / "models").mkdir()
    own = isolated / "models" / "wav2lip_gan.pth"
    own.write_bytes(BAD)
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    with pytest.raises(LipSyncError, match=f"{own} is not the published wav2lip_gan.pth.*"
                                           f"\\(--checkpoint_path {own} on the command line\\)"):
        weights.resolve_weights("wav2lip_gan", "wav2lip")
    assert own.read_bytes() == BAD


def test_an_existing_file_is_used_as_given(isolated: Path) -> None:
    mine = isolated / "my weights.bin"
    mine.write_bytes(BAD)
    assert weights.resolve_weights(str(mine), "wav2lip") == mine


@pytest.mark.parametrize("source,opening", [("wav2lip_xl", "Unknown weights name 'wav2lip_xl'"),
                                            ("ckpt/missing.pth", "No weights file at ")])  # fmt: skip
def test_unknown_names_list_the_known_ones(source: str, opening: str) -> None:
    with pytest.raises(LipSyncError) as caught:
        weights.resolve_weights(source, "wav2lip")
    message = str(caught.value)
    assert message.startswith(opening)
    for name in weights.WEIGHTS_NAMES:
        assert name in message


def test_a_name_of_the_other_kind_is_refused() -> None:
    with pytest.raises(LipSyncError, match="s3fd holds S3FD face detector weights.*wav2lip_hq, wav2lip_gan, wav2lip"):
        weights.resolve_weights("s3fd", "wav2lip")


def test_cache_dir_follows_the_environment(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.cache_dir() == isolated / "xdg" / "lipsync"
    monkeypatch.delenv(weights.XDG_CACHE_ENV)
    assert weights.cache_dir() == isolated / "home" / ".cache" / "lipsync"
    monkeypatch.setenv(weights.CACHE_ENV, str(isolated / "mine"))
    assert weights.cache_dir() == isolated / "mine"


# --- URL downloads --------------------------------------------------------------------------------


def test_url_download_is_verified_cached_and_reused(isolated: Path, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    server.files["/w.pdparams"] = GOOD
    use_entry(monkeypatch, "wav2lip_hq", url=server.url("/w.pdparams"), sha256=GOOD_SHA)
    first = weights.resolve_weights("wav2lip_hq", "wav2lip")
    assert first == isolated / "xdg" / "lipsync" / "wav2lip_hq.pdparams"
    assert first.read_bytes() == GOOD
    assert weights.resolve_weights("wav2lip_hq", "wav2lip") == first
    assert server.requests == 1
    assert cache_files(isolated) == ["wav2lip_hq.pdparams"]


def test_checksum_mismatch_deletes_the_download(isolated: Path, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    server.files["/w.pdparams"] = BAD
    use_entry(monkeypatch, "wav2lip_hq", url=server.url("/w.pdparams"), sha256=GOOD_SHA)
    with pytest.raises(LipSyncError, match="wav2lip_hq.pdparams from .* does not match its published sha256"):
        weights.resolve_weights("wav2lip_hq", "wav2lip")
    assert cache_files(isolated) == []


def test_interrupted_download_leaves_nothing_and_a_retry_works(isolated: Path, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    server.files["/w.pdparams"] = GOOD
    server.cut_short = True
    use_entry(monkeypatch, "wav2lip_hq", url=server.url("/w.pdparams"), sha256=GOOD_SHA)
    with pytest.raises(LipSyncError, match=r"Could not download wav2lip_hq.pdparams .*closed after \d+ of 18000 bytes"):
        weights.resolve_weights("wav2lip_hq", "wav2lip")
    assert cache_files(isolated) == []  # no final file and no .part left behind
    server.cut_short = False
    assert weights.resolve_weights("wav2lip_hq", "wav2lip").read_bytes() == GOOD


def test_a_damaged_cached_copy_is_downloaded_again(isolated: Path, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    server.files["/s.pdparams"] = GOOD
    use_entry(monkeypatch, "s3fd_paddle", url=server.url("/s.pdparams"), sha256=GOOD_SHA)
    cached = isolated / "xdg" / "lipsync" / "s3fd_paddle.pdparams"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BAD)
    assert weights.resolve_weights("s3fd_paddle", "s3fd").read_bytes() == GOOD
    assert server.requests == 1


@pytest.mark.parametrize("name", weights.WEIGHTS_NAMES)
def test_offline_error_says_which_file_to_put_where(isolated: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    entry = weights.WEIGHTS[name]
    with pytest.raises(LipSyncError) as caught:
        weights.resolve_weights(name, entry.kind)
    message = str(caught.value)
    assert message.startswith(f"Could not download {entry.filename} (no network?")
    mirror = f" (or {entry.url})" if entry.hub and entry.url else ""
    assert f"Download it from {entry.download_url}{mirror} and put it in $LIPSYNC_MODELS (currently not set)" in message
    assert message.endswith(f"or give another weights file ({weights.PATH_OPTIONS[entry.kind]} /path/to/file "
                            "on the command line).")  # the web app shows this too: the flag is marked as the CLI's
    assert "\n" not in message
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    with pytest.raises(LipSyncError, match=f"\\$LIPSYNC_MODELS \\(currently {isolated / 'models'}\\)"):
        weights.resolve_weights(name, entry.kind)


# --- Hugging Face Hub -----------------------------------------------------------------------------


def test_hub_file_is_downloaded_once_then_found_offline(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    entry = use_entry(monkeypatch, "wav2lip", sha256=GOOD_SHA)
    hub.remote[(entry.hub.repo_id, entry.hub.path)] = GOOD
    hub.online = True
    path = weights.resolve_weights("wav2lip", "wav2lip")
    assert path.read_bytes() == GOOD
    hub.online = False
    assert weights.resolve_weights("wav2lip", "wav2lip") == path
    assert hub.downloads == 1


def test_hub_download_with_the_wrong_hash_is_deleted(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    entry = use_entry(monkeypatch, "wav2lip_gan", sha256=GOOD_SHA)
    hub.remote[(entry.hub.repo_id, entry.hub.path)] = BAD
    hub.online = True
    with pytest.raises(LipSyncError, match="does not match its published sha256"):
        weights.resolve_weights("wav2lip_gan", "wav2lip")
    assert not hub.snapshot_path(entry.hub.repo_id, entry.hub.path).exists()
    assert not list(hub.root.rglob("blobs/*"))


def test_s3fd_falls_back_to_its_url_when_the_hub_is_unreachable(isolated: Path, monkeypatch: pytest.MonkeyPatch, server: FileServer) -> None:
    server.files["/s3fd-619a316812.pth"] = GOOD
    use_entry(monkeypatch, "s3fd", url=server.url("/s3fd-619a316812.pth"), sha256=GOOD_SHA)
    assert weights.resolve_weights("s3fd", "s3fd") == isolated / "xdg" / "lipsync" / "s3fd.pth"


def test_hub_offline_mode_skips_the_hub_and_says_so(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    entry = use_entry(monkeypatch, "wav2lip", sha256=GOOD_SHA)
    hub.remote[(entry.hub.repo_id, entry.hub.path)] = GOOD
    hub.online = True
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LipSyncError, match=r"Could not download wav2lip.pth \(no network\? HF_HUB_OFFLINE is set\)"):
        weights.resolve_weights("wav2lip", "wav2lip")
    assert hub.downloads == 0
    assert weights.download_sources("wav2lip") == [weights.DownloadSource(entry.hub.url, weights.HUB_OFFLINE)]


# --- without huggingface_hub (requirements.txt leaves it to Spaces) -------------------------------


@pytest.fixture
def no_hub_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import huggingface_hub` fails, as on a machine that installed only requirements.txt."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError):
        import huggingface_hub  # noqa: F401


@pytest.mark.usefixtures("no_hub_library")
def test_without_huggingface_hub_a_hub_name_says_what_to_install(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    entry = weights.WEIGHTS["wav2lip_gan"]
    with pytest.raises(LipSyncError) as caught:
        weights.resolve_weights("wav2lip_gan", "wav2lip")
    assert str(caught.value) == (
        f"wav2lip_gan.pth comes from the Hugging Face Hub, and huggingface_hub is not installed "
        f"(pip install huggingface_hub). Install it, or download the file from {entry.hub.url} and put it in "
        f"$LIPSYNC_MODELS (currently {isolated / 'models'}), or give another weights file "
        "(--checkpoint_path /path/to/file on the command line)."
    )
    assert weights.download_sources("wav2lip_gan") == [weights.DownloadSource(entry.hub.url, weights.NO_HUB_LIBRARY)]


@pytest.mark.usefixtures("no_hub_library")
def test_without_huggingface_hub_urls_and_local_files_still_work(isolated: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 server: FileServer) -> None:  # fmt: skip
    server.files["/s3fd.pth"] = GOOD
    use_entry(monkeypatch, "s3fd", url=server.url("/s3fd.pth"), sha256=GOOD_SHA)
    assert weights.resolve_weights("s3fd", "s3fd").read_bytes() == GOOD, "the hub file's plain-URL mirror"
    use_entry(monkeypatch, "wav2lip_gan", sha256=GOOD_SHA)
    (isolated / "models").mkdir()
    (isolated / "models" / "wav2lip_gan.pth").write_bytes(GOOD)
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    assert weights.resolve_weights("wav2lip_gan", "wav2lip") == isolated / "models" / "wav2lip_gan.pth"
    status = {s.name: s for s in weights.cached_status()}
    assert status["wav2lip_gan"].where == "models dir" and status["wav2lip"].where == "missing"


@pytest.mark.usefixtures("no_hub_library")
def test_without_huggingface_hub_an_unreachable_mirror_names_both_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LipSyncError, match=r"s3fd.pth \(no network\? huggingface_hub is not installed "
                                           r"\(pip install huggingface_hub\); .*name resolution"):  # fmt: skip
        weights.resolve_weights("s3fd", "s3fd")


def test_download_sources_follow_the_hub_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.example.org/")
    hub_file = weights.WEIGHTS["s3fd"].hub
    assert weights.download_sources("s3fd") == [
        weights.DownloadSource(f"https://hub.example.org/{hub_file.repo_id}/resolve/main/{hub_file.path}"),
        weights.DownloadSource(weights.WEIGHTS["s3fd"].url),
    ]
    assert weights.download_sources("wav2lip_hq") == [weights.DownloadSource(weights.WEIGHTS["wav2lip_hq"].url)]


def test_cached_status_reports_without_downloading(isolated: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    use_entry(monkeypatch, "s3fd", sha256=GOOD_SHA)
    gan = use_entry(monkeypatch, "wav2lip_gan", sha256=GOOD_SHA)
    (isolated / "models").mkdir()
    (isolated / "models" / "s3fd.pth").write_bytes(GOOD)
    monkeypatch.setenv(weights.MODELS_ENV, str(isolated / "models"))
    hub.put_in_cache(gan.hub.repo_id, gan.hub.path, BAD)
    (isolated / "xdg" / "lipsync").mkdir(parents=True)
    (isolated / "xdg" / "lipsync" / "wav2lip_hq.pdparams").write_bytes(BAD)
    status = {s.name: s for s in weights.cached_status()}
    assert (status["s3fd"].where, status["s3fd"].verified) == ("models dir", True)
    assert (status["wav2lip_gan"].where, status["wav2lip_gan"].verified) == ("hub cache", False)
    assert (status["wav2lip_hq"].where, status["wav2lip_hq"].verified) == ("cache", None)
    assert (status["wav2lip"].where, status["wav2lip"].path) == ("missing", None)
    assert hub.downloads == 0 and hub.snapshot_path(gan.hub.repo_id, gan.hub.path).exists()


# --- the loader -----------------------------------------------------------------------------------


def _random_wav2lip() -> Wav2Lip:
    """A Wav2Lip with random weights and BatchNorm statistics, scaled so activations stay in range."""
    model = Wav2Lip()
    rng = np.random.default_rng(0)
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        if name.endswith("_variance"):
            values = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("_mean") or name.endswith("bias"):
            values = rng.normal(0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            values = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        tensor.set_value(values.astype(np.float32))
    model.eval()
    return model


def _generate(model: Wav2Lip) -> np.ndarray:
    rng = np.random.default_rng(1)
    mel = paddle.to_tensor(rng.normal(0, 1, (1, 1, 80, 16)).astype(np.float32))
    faces = paddle.to_tensor(rng.uniform(0, 1, (1, 6, 96, 96)).astype(np.float32))
    return model(mel, faces).numpy()


@pytest.fixture(scope="module")
def saved_wav2lip(tmp_path_factory: pytest.TempPathFactory) -> Tuple[np.ndarray, Dict[str, Path]]:
    """One random generator's output, and its weights saved as .pdparams and as torch zip/legacy checkpoints."""
    folder = tmp_path_factory.mktemp("wav2lip")
    model = _random_wav2lip()
    paddle.save(model.state_dict(), str(folder / "wav2lip_hq.pdparams"))
    checkpoint = training_checkpoint(torch_names(model.state_dict()))
    save_torch(checkpoint, folder / "zip.pth")
    save_torch(checkpoint, folder / "legacy.pth", legacy=True)
    files = {"pdparams": folder / "wav2lip_hq.pdparams", "zip": folder / "zip.pth", "legacy": folder / "legacy.pth"}
    return _generate(model), files


@pytest.mark.parametrize("kind", ["pdparams", "zip", "legacy"])
def test_load_wav2lip_reproduces_the_saved_generator(saved_wav2lip: Tuple[np.ndarray, Dict[str, Path]], kind: str) -> None:
    expected, files = saved_wav2lip
    assert 0.05 < expected.std() and 0.01 < expected.mean() < 0.99  # a real signal, not saturated
    model = weights.load_wav2lip(str(files[kind]))
    assert not model.training
    np.testing.assert_array_equal(_generate(model), expected)


def test_load_wav2lip_by_name_from_the_models_dir(saved_wav2lip: Tuple[np.ndarray, Dict[str, Path]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    expected, files = saved_wav2lip
    monkeypatch.setenv(weights.MODELS_ENV, str(files["pdparams"].parent))
    np.testing.assert_array_equal(_generate(weights.load_wav2lip()), expected)


def test_loaded_generator_is_reused_until_the_file_changes(saved_wav2lip: Tuple[np.ndarray, Dict[str, Path]],
                                                           isolated: Path) -> None:  # fmt: skip
    copy = isolated / "copy.pdparams"
    copy.write_bytes(saved_wav2lip[1]["pdparams"].read_bytes())
    first = weights.load_wav2lip(str(copy))
    assert weights.load_wav2lip(str(copy)) is first
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    assert weights.load_wav2lip(str(copy)) is not first


def test_load_wav2lip_refuses_other_weights_with_a_hint(isolated: Path) -> None:
    conv = paddle.nn.Conv2D(3, 64, 3)
    paddle.save({"conv1_1.weight": conv.weight, "conv1_1.bias": conv.bias}, str(isolated / "s3fd.pdparams"))
    with pytest.raises(LipSyncError) as caught:
        weights.load_wav2lip(str(isolated / "s3fd.pdparams"))
    message = str(caught.value)
    assert "does not match the Wav2Lip model" in message and "\n" not in message
    assert "2 unexpected (conv1_1.weight, conv1_1.bias)" in message
    assert "S3FD weights are the face detector's (--detector_weights on the command line)" in message
