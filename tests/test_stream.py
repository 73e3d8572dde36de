"""webapp.stream in-process, with a stand-in engine: segments reach the page as they come, then the mp4; a visitor
who leaves stops the run without anyone waiting for it, and the request folder goes once the run has ended."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import gradio as gr
import pytest

import lipsync
from lipsync.types import STAGE_SYNC
from media_helpers import eventually  # the run thread finishes a request folder just after the run's result is out
from webapp import folders, jobs, limits, stream  # test_app put the repository on sys.path (conftest)

SEGMENTS = 3
DEADLINE_S = 30  # for the run thread to get somewhere; never reached when things work


@pytest.fixture
def requests(tmp_path, monkeypatch) -> folders.RequestFolders:
    made = folders.RequestFolders(tmp_path / "requests")
    monkeypatch.setattr(folders, "requests", made)
    jobs.set_runs_at_once(1)
    return made


class Engine:
    """lipsync.run's stand-in: hands over SEGMENTS segments with progress between them; with `hold`, it then
    keeps reporting progress until released (a long run)."""

    def __init__(self, hold: bool = False, fail: bool = False) -> None:
        self.hold, self.fail = hold, fail
        self.release, self.ended = threading.Event(), threading.Event()
        self.raised: list = []

    def __call__(self, face, speech, outfile, options, progress, segments):
        try:
            for index in range(SEGMENTS):
                made = Path(outfile).parent / f"made-{index}.ts"
                made.write_bytes(b"ts")
                segments(made)
                progress("lip-syncing", index + 1, SEGMENTS)
            while self.hold and not self.release.wait(0.01):
                progress("lip-syncing", SEGMENTS, SEGMENTS)
            if self.fail:
                raise lipsync.LipSyncError("No face found in face.png")
            Path(outfile).write_bytes(b"mp4")
            from lipsync.pipeline import RunResult

            return RunResult(Path(outfile), 25, 25.0, 1.0, "cpu", "wav2lip_hq", "2.6.2", ("a note",))
        except BaseException as exc:
            self.raised.append(exc)
            raise
        finally:
            self.ended.set()


def _stream(media, seen: list):
    return stream.make_video_stream(limits.Limits(), face_image=str(media["photo"]), audio=str(media["speech"]),
                                    progress=lambda value, desc: seen.append(desc))  # fmt: skip


def test_segments_reach_the_page_as_they_come_then_the_mp4(requests, monkeypatch, media):
    engine = Engine()
    monkeypatch.setattr(lipsync, "run", engine, raising=False)
    seen: list = []
    updates = _stream(media, seen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        every = list(updates)
    assert "a note" in [str(w.message) for w in caught], "the run's notes are warnings, as on /lipsync"
    first = every[0]
    assert first[1]["visible"] is False and first[2:] == (None, ""), "the last result's download and status go"
    streamed = []
    for update in every[1:]:
        if not isinstance(update[0], dict):  # a segment; gr.skip() is a dict
            assert Path(update[0]).is_file(), "still there when gradio reads it"
            assert update[1:] == (gr.skip(),) * 3
            streamed.append(Path(update[0]))
        else:
            final = update
    assert [p.name for p in streamed] == [f"made-{i}.ts" for i in range(SEGMENTS)]
    assert final[1]["visible"] is True and Path(final[1]["value"]).read_bytes() == b"mp4"
    assert final[2] is None and "25 frames at 25 fps" in final[3]
    assert seen == [f"lip-syncing {i}/{SEGMENTS}" for i in range(1, SEGMENTS + 1)]
    assert eventually(lambda: not requests.active(), DEADLINE_S), "no longer active once the run ended"
    [folder] = requests.root.iterdir()
    assert streamed[0].parent.parent == folder, "kept after the run"


def test_a_visitor_who_leaves_stops_the_run_and_its_folder_goes_when_it_ends(requests, monkeypatch, media):
    engine = Engine(hold=True)
    monkeypatch.setattr(lipsync, "run", engine, raising=False)
    updates = _stream(media, [])
    next(updates), next(updates)  # the first segment is playing
    [folder] = requests.active()
    updates.close()  # gradio closes the generator on the event loop: this must not wait for the run
    assert not engine.ended.is_set(), "close() returned while the run still ran"
    assert engine.ended.wait(DEADLINE_S)
    assert [type(e) for e in engine.raised] == [stream.Stopped], "stopped at its next progress report"
    assert eventually(lambda: not folder.exists() and not requests.active(), DEADLINE_S)


def test_a_run_that_fails_tells_the_visitor_and_leaves_no_folder(requests, monkeypatch, media):
    monkeypatch.setattr(lipsync, "run", Engine(fail=True), raising=False)
    updates = _stream(media, [])
    with pytest.raises(gr.Error, match="No face found in face.png"):
        for _ in updates:
            pass
    assert eventually(lambda: not list(requests.root.iterdir()) and not requests.active(), DEADLINE_S)


def test_the_stream_takes_the_lipsync_endpoints_parameters():
    import inspect

    assert inspect.signature(stream.make_video_stream) == inspect.signature(jobs.make_video)
    assert inspect.isgeneratorfunction(stream.make_video_stream)


def _simulated_run(rate: float, seconds: int = 20, fps: int = 25, chunk: int = 16, start_up: float = 3.0) -> list:
    """A run's events in time order: ("made", when, frames done, frames) as each chunk of frames is handed to the
    encoder, ("segment", when, index) as each one-second segment is out, in lumps (as x264's lookahead lets them
    go: every other one 0.6 s late, the first too)."""
    frames = seconds * fps
    events = [("made", start_up + done / (fps * rate), done, frames)
              for done in [*range(chunk, frames, chunk), frames]]  # fmt: skip
    events += [("segment", start_up + (index + 1) / rate + 0.6 * (1 - index % 2), index) for index in range(seconds)]
    return sorted(events, key=lambda event: event[1])


def _played_from(events: list, seconds: float) -> tuple:
    """When a Pacer fed these events lets the player start, and when each segment came."""
    now = [0.0]
    pacer = stream.Pacer(clock=lambda: now[0])
    pacer.expect(seconds)
    report = pacer.watching(lambda *args: None)
    start, arrivals = None, []
    for event in events:
        now[0] = event[1]
        if event[0] == "made":
            report(STAGE_SYNC, event[2], event[3])
        else:
            arrivals.append(event[1])
            if pacer.arrived() and start is None:
                start = event[1]
    return start, arrivals


def _first_stall(arrivals: list, start: float) -> float:
    """Playing one-second segments from `start`, the first moment the player waits for one; 0 if it never does."""
    for index, arrived in enumerate(arrivals):
        if start + index < arrived:
            return start + index
    return 0.0


@pytest.mark.parametrize("rate", [0.3, 0.6, 0.85, 0.95, 1.5, 4.0])  # seconds of video made a second
def test_the_player_starts_once_it_plays_through_without_a_stall(rate):
    """20 s of video after 3 s of start-up, made at `rate` seconds of video a second, its segments out in lumps:
    the player starts once the encoder can no longer be caught up, and never waits; as fast as playback or faster,
    with the first segments. Started at once, a run at 0.85 stalled the player; measured from the lumpy segments
    instead of the frames made, a run at 0.85 looked faster than playback after two of them, and stalled it too."""
    start, arrivals = _played_from(_simulated_run(rate), 20.0)
    assert start is not None and _first_stall(arrivals, start) == 0.0, f"played from {start:.1f} s"
    if rate * stream.RATE_MARGIN >= 1:
        assert start <= arrivals[1]
    else:
        assert _first_stall(arrivals, arrivals[0]) > 0, "the stall it spares"


def test_a_short_or_unmeasured_video_plays_at_once():
    pacer = stream.Pacer()
    assert pacer.arrived(), "length unknown: no waiting"
    pacer = stream.Pacer()
    pacer.expect(1.0)
    assert pacer.arrived(), "one segment is the whole video"
    pacer = stream.Pacer()
    pacer.expect(5.0)
    assert not pacer.arrived(), "no frames measured yet: held"
    pacer.watching(lambda *args: None)(STAGE_SYNC, 125, 125)
    assert pacer.arrived(), "every frame made: the rest is the encoder's lag"


def test_held_segments_go_in_order_at_the_latest_when_the_run_ends(requests, monkeypatch, media):
    """A run the pacer never lets play (no rate is enough): every segment still reaches the page, in order, before
    the mp4."""
    monkeypatch.setattr(stream, "RATE_MARGIN", 0.0)
    monkeypatch.setattr(lipsync, "run", Engine(), raising=False)
    with pytest.warns(UserWarning, match="a note"):  # the run's notes, as on any stream
        every = list(_stream(media, []))
    kinds = ["segment" if not isinstance(update[0], dict) else "other" for update in every]
    assert kinds == ["other"] + ["segment"] * SEGMENTS + ["other"]
    assert [Path(update[0]).name for update in every[1:-1]] == [f"made-{i}.ts" for i in range(SEGMENTS)]
