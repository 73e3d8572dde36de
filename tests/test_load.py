"""Load: `python app.py` on 127.0.0.1 takes 8 requests from 4 concurrent gradio_client clients.

All must succeed with outputs that match their own inputs (no crossed temp files), one job runs at a time
(the queue bounds concurrency), the server's memory comes back to where it was, and no temp file is left.
Bounded: 10 short jobs, a few minutes at most, nothing but localhost.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import ffprobe, speech_seconds
from gradio_client import Client, handle_file
from gradio_client.utils import Status
from test_app import launch_app


CLIENTS = 4
REQUESTS_PER_CLIENT = 2
JOB_TIMEOUT_S = 240
SAMPLE_S = 0.02  # how often the watcher looks at every job's status
OVERLAP_SLACK_S = 0.3  # status messages of two clients' streams may arrive this much out of order
AV_TOLERANCE_S = 0.12  # output vs its speech: a frame plus AAC padding
MIN_GAP_S = 0.25  # the speeches' lengths differ at least this much, so a crossed output shows
RSS_SLACK = 0.15  # after the load, the server may hold this much more than after its warm-up (allocator noise)
SETTLE_S = 3.0  # idle time before memory is read again
RUNNING = (Status.PROCESSING, Status.PROGRESS, Status.ITERATING)
# Each client's sentences, all of different lengths (espeak-ng speaks ~0.4 s per word).
SENTENCES = [
    "One.",
    "One two three.",
    "One two three four five.",
    "One two three four five six seven.",
    "One two three four five six seven eight nine.",
    "One two three four five six seven eight nine ten eleven.",
    "One two three four five six seven eight nine ten eleven twelve thirteen.",
    "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen.",
]
WARM_UP = "Warming up."


@pytest.fixture(scope="module")
def speeches(tmp_path_factory) -> Tuple[Path, List[Path]]:
    folder = tmp_path_factory.mktemp("load speech")
    paths = []
    for index, text in enumerate([WARM_UP, *SENTENCES]):
        path = folder / f"speech-{index}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        paths.append(path)
    lengths = sorted(speech_seconds(p) for p in paths[1:])
    assert min(b - a for a, b in zip(lengths, lengths[1:])) >= MIN_GAP_S, "the outputs must tell the inputs apart"
    return paths[0], paths[1:]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Watcher:
    """Samples every submitted job's status and keeps, per job, when it was first and last seen running."""

    def __init__(self) -> None:
        self.jobs: Dict[str, object] = {}
        self.running: Dict[str, List[float]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def add(self, name: str, job: object) -> None:
        with self._lock:
            self.jobs[name] = job

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                jobs = list(self.jobs.items())
            now = time.monotonic()
            for name, job in jobs:
                if job.status().code in RUNNING:  # type: ignore[attr-defined]
                    seen = self.running.setdefault(name, [now, now])
                    seen[1] = now
            time.sleep(SAMPLE_S)


def _client(url: str, downloads: Path) -> Client:
    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


def _lipsync(client: Client, photo: Path, speech: Path, watcher: Optional[Watcher], name: str) -> Tuple[str, str]:
    job = client.submit(face_image=handle_file(str(photo)), audio=handle_file(str(speech)), detector="haar",
                        api_name="/lipsync")  # fmt: skip
    if watcher is not None:
        watcher.add(name, job)
    video, _, status = job.result(timeout=JOB_TIMEOUT_S)
    return video, status


def _overlap(a: List[float], b: List[float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def test_four_clients_eight_requests(isolated_weights, media, speeches, tmp_path):
    warm_up, sentences = speeches
    server = launch_app(tmp_path / "server")
    try:
        pid = server.process.pid
        warm = _client(server.url, tmp_path / "warm")
        for speech in (warm_up, sentences[-1]):  # a short and the longest job: every code path has run once
            _lipsync(warm, media["photo"], speech, None, "warm-up")
        time.sleep(SETTLE_S)
        baseline = _rss_mb(pid)
        watcher = Watcher()

        def one_client(index: int) -> List[Tuple[Path, str, str]]:
            client = _client(server.url, tmp_path / f"client-{index}")
            mine = sentences[index * REQUESTS_PER_CLIENT : (index + 1) * REQUESTS_PER_CLIENT]
            return [(s, *_lipsync(client, media["photo"], s, watcher, f"{index}-{s.name}")) for s in mine]

        with ThreadPoolExecutor(CLIENTS) as pool:
            done = [job for jobs in pool.map(one_client, range(CLIENTS)) for job in jobs]
        watcher.stop()
        time.sleep(SETTLE_S)
        after = _rss_mb(pid)
        print(f"server RSS: {baseline:.0f} MB after its warm-up, {after:.0f} MB after {len(SENTENCES)} more jobs")
    finally:
        server.stop()

    assert len(done) == CLIENTS * REQUESTS_PER_CLIENT
    for speech, video, status in done:
        info = ffprobe(Path(video))
        assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
        assert abs(float(info["format"]["duration"]) - speech_seconds(speech)) <= AV_TOLERANCE_S, (speech.name, status)
    assert len({video for _, video, _ in done}) == len(done), "every request got its own file"

    spans = list(watcher.running.values())
    assert len(spans) >= len(done) - 1, "the watcher saw the jobs run"
    worst = max(_overlap(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :])
    assert worst <= OVERLAP_SLACK_S, f"two jobs ran at once for {worst:.2f} s: the queue must run one at a time"

    assert after <= baseline * (1 + RSS_SLACK), f"memory grew from {baseline:.0f} MB to {after:.0f} MB under load"

    leftovers = [p for p in server.tmp.rglob("*") if p.name.startswith("lipsync-") and "lipsync-app" not in p.parts]
    assert not leftovers, f"a run's temp dir was left: {leftovers}"
    parts = [p for p in server.tmp.rglob("*") if p.suffix in (".part", ".raw")]
    assert not parts, f"partial or frame-cache files were left: {parts}"
    requests = sorted((server.tmp / "lipsync-app").glob("request-*"))
    assert len(requests) == len(done) + 2 and all(sorted(os.listdir(r)) == ["lipsync.mp4"] for r in requests)
    assert not list(server.cwd.iterdir()), "nothing in the working directory"
