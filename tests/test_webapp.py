"""The webapp package, in-process: limits, request folders, the endpoints' work, examples and form helpers."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import heic_copy, media_seconds, refused_proxy

import lipsync
from lipsync import native, tts
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions
from webapp import examples, folders, form, jobs, limits, picker, voices  # test_app put the repository on sys.path


def _refuse_edge_tts(monkeypatch) -> None:
    for name in ("HTTPS_PROXY", "WSS_PROXY", "https_proxy", "wss_proxy"):
        monkeypatch.setenv(name, refused_proxy())
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_an_example_is_made_once_with_its_own_detector_and_kept(tmp_path, monkeypatch):
    _refuse_edge_tts(monkeypatch)
    monkeypatch.setattr(folders, "requests", folders.RequestFolders(tmp_path / "requests"))
    results = examples.ExampleResults(functools.partial(jobs.make_video, limits.Limits()), tmp_path / "kept")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        video, speech, status = results.get(0)  # the cartoon, with typed text
    said = [str(w.message) for w in caught]  # gr.Warning outside a page is a Python warning
    assert any(m.startswith(jobs.SPOKEN_OFFLINE) for m in said), said
    assert not any(jobs.HAAR_NOTE in m for m in said), said  # the cartoon asks for Haar itself
    assert not native.hiding_native_chatter()  # a server's stderr (fd 2) is never redirected
    assert "faces: haar" in status and status.endswith("voice: espeak-ng en-us")
    assert Path(video) == tmp_path / "kept" / "0" / jobs.OUTPUT_NAME and Path(speech).parent == Path(video).parent
    assert not list((tmp_path / "requests").iterdir())  # the request folder went once its files were kept
    made = os.stat(video).st_mtime_ns
    assert results.get(0) == (video, speech, status) and os.stat(video).st_mtime_ns == made


def test_limits_come_from_the_environment():
    Limits = limits.Limits
    assert Limits.from_env({}) == Limits(60.0, 100.0, 1000, 10.0)
    env = {"LIPSYNC_MAX_SECONDS": "0", "LIPSYNC_MAX_UPLOAD_MB": "12.5", "LIPSYNC_MAX_TEXT_CHARS": "200",
           "LIPSYNC_MAX_ENHANCED_SECONDS": "4"}
    assert Limits.from_env(env) == Limits(0.0, 12.5, 200, 4.0)
    for bad in ("ten", "-1"):
        with pytest.raises(ValueError, match="LIPSYNC_MAX_SECONDS must be a number"):
            Limits.from_env({"LIPSYNC_MAX_SECONDS": bad})
    assert limits.launch_options(Limits(max_upload_mb=12.5)) == {"max_file_size": "12.5mb"}
    assert limits.launch_options(Limits(max_upload_mb=0)) == {"max_file_size": None}


def test_duration_limit_covers_audio_and_video(media):
    speech = media_seconds(media["speech"])
    limits.check_seconds(media["speech"], "audio", limits.Limits(max_seconds=speech + 1))
    limits.check_seconds(media["speech"], "audio", limits.Limits(max_seconds=0))  # 0 = no limit
    limits.check_seconds(media["photo"], "face video", limits.Limits(max_seconds=0.5))  # a picture has no duration
    with pytest.raises(gr.Error, match=rf"audio lasts {speech:.1f} s; this app accepts up to 1 s"):
        limits.check_seconds(media["speech"], "audio", limits.Limits(max_seconds=1))
    with pytest.raises(gr.Error, match="face video lasts 2.0 s"):
        limits.check_seconds(media["video"], "face video", limits.Limits(max_seconds=1.5))
    with pytest.raises(gr.Error, match="speaks up to 10"):
        limits.check_text("x" * 11, limits.Limits(max_text_chars=10))


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


def test_old_request_folders_are_removed_but_never_a_running_jobs(tmp_path):
    requests = folders.RequestFolders(tmp_path, ttl_s=3600)
    old = requests.new()
    (old / "lipsync.mp4").write_bytes(b"done")
    requests.finish(old, keep=True)
    running = requests.new()  # a job that has been running for two hours
    (running / "speech-1.wav").write_bytes(b"RIFF")
    for folder in (old, running):
        _age(folder, 7200)
    recent = requests.new()
    newest = requests.new()
    assert not old.exists() and recent.is_dir() and newest.is_dir() and recent != newest
    assert running.is_dir() and (running / "speech-1.wav").is_file() and running in requests.active()
    requests.finish(running, keep=True)  # its results are kept for the TTL from now, not from its start
    requests.clean_up()
    assert running.is_dir() and running not in requests.active()
    _age(running, 7200)
    requests.clean_up()
    assert not running.exists()


def test_a_request_folder_is_active_for_the_length_of_its_job(tmp_path):
    requests = folders.RequestFolders(tmp_path, ttl_s=60)
    with requests.job() as workdir:
        _age(workdir, 120)  # a long job
        requests.clean_up()
        assert workdir.is_dir() and workdir in requests.active()
    assert workdir.is_dir() and workdir not in requests.active()  # kept for the TTL from now: gradio copies it
    with pytest.raises(RuntimeError):
        with requests.job() as failed:
            raise RuntimeError("boom")
    assert not failed.exists() and failed not in requests.active()  # a failed job's folder goes at once
    _age(workdir, 120)
    requests.clean_up()
    assert not list(tmp_path.iterdir())


def test_runs_take_turns_on_one_long_lived_thread(tmp_path, monkeypatch, media):
    """gradio frees a cancelled job's concurrency slot while its thread runs on, and its idle worker threads end
    (a new one may reuse a dead one's id, which paddle's oneDNN caches trip over): runs must still take turns, on
    a thread that outlives the requests, with each request's progress bar."""
    from lipsync.pipeline import RunResult

    lock, running, peak, threads = threading.Lock(), [0], [0], set()

    def engine(face, speech, outfile, options, progress):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.current_thread())
        progress("lip-syncing", 1, 1)
        time.sleep(0.2)  # long enough for the others to arrive
        with lock:
            running[0] -= 1
        outfile.write_bytes(b"mp4")
        return RunResult(outfile, 5, 25.0, 0.2, "cpu", "wav2lip_hq", "2.6.2")

    def request(index: int) -> tuple:
        seen = []
        made = jobs.make_video(limits.Limits(), face_image=str(media["photo"]), audio=str(media["speech"]),
                               progress=lambda value, desc: seen.append(desc))  # fmt: skip
        return made, seen

    monkeypatch.setattr(lipsync, "run", engine, raising=False)
    monkeypatch.setattr(folders, "requests", folders.RequestFolders(tmp_path))
    jobs.set_runs_at_once(1)
    with ThreadPoolExecutor(3) as pool:  # three requests at once, each on a thread of its own
        answers = list(pool.map(request, range(3)))
    with ThreadPoolExecutor(1) as pool:  # a later request on a new thread
        answers.append(pool.submit(request, 3).result())
    assert peak[0] == 1 and len({made[0] for made, _ in answers}) == 4
    assert all(seen == ["lip-syncing"] for _, seen in answers)
    [thread] = threads
    assert thread.name.startswith(jobs.RUN_THREAD_PREFIX) and thread.is_alive()


def test_the_sharpen_checkbox_reaches_the_engine_with_the_cpu_limit_and_its_own_progress(tmp_path, monkeypatch,
                                                                                         media):  # fmt: skip
    from lipsync.pipeline import RunResult

    asked, seen = [], []

    def engine(face, speech, outfile, options, progress):
        asked.append(options)
        for done in (8, 16):  # as the pipeline reports with enhancement on: each batch lip-synced, then enhanced
            progress("lip-syncing", done, 16)
            progress("enhancing faces", done, 16)
        outfile.write_bytes(b"mp4")
        return RunResult(outfile, 16, 25.0, 0.2, "cpu", "wav2lip_hq", "2.6.2")

    monkeypatch.setattr(lipsync, "run", engine, raising=False)
    monkeypatch.setattr(folders, "requests", folders.RequestFolders(tmp_path))
    speech_s = media_seconds(media["speech"])
    short = limits.Limits(max_enhanced_seconds=speech_s + 1)
    jobs.make_video(short, face_image=str(media["photo"]), audio=str(media["speech"]), face_enhancement=True,
                    progress=lambda value, desc: seen.append((value, desc)))  # fmt: skip
    assert [o.face_enhancement for o in asked] == [True]
    values = [v for v, _ in seen]
    assert values == sorted(values), "lip-syncing and enhancing take turns: the bar must not jump back"
    assert seen[-1] == (jobs.ENHANCED_STAGES["enhancing faces"][1], "enhancing faces 16/16")
    jobs.make_video(short, face_image=str(media["photo"]), audio=str(media["speech"]), progress=jobs.no_progress)
    assert asked[-1].face_enhancement is False, "off by default"
    with pytest.raises(gr.Error, match="sharpens the face \\(GPEN\\) for up to"):  # this machine has no GPU
        jobs.make_video(limits.Limits(max_enhanced_seconds=speech_s / 2), face_image=str(media["photo"]),
                        audio=str(media["speech"]), face_enhancement=True, progress=jobs.no_progress)  # fmt: skip
    assert len(asked) == 2, "refused before the engine ran"
    assert "No GPU here" in jobs.sharpen_note(threads=2) and " min per 10 s of video" in jobs.sharpen_note(2)


def test_messages_reach_the_page_as_text_not_html(tmp_path, monkeypatch, media):
    """gr.Warning and gr.Error render HTML: a quoted "<urlopen error …>" hid the rest of the engine's note."""
    from lipsync.pipeline import RunResult

    note = ("The S3FD face detector's weights are not available here (<urlopen error [Errno -2] Name or service not "
            "known>), so OpenCV's Haar detector found the faces.")  # fmt: skip

    def engine(face, speech, outfile, options, progress):
        outfile.write_bytes(b"mp4")
        return RunResult(outfile, 5, 25.0, 0.2, "cpu", "wav2lip_hq", "2.6.2", (note,))

    monkeypatch.setattr(lipsync, "run", engine, raising=False)
    monkeypatch.setattr(folders, "requests", folders.RequestFolders(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, status = jobs.make_video(limits.Limits(), face_image=str(media["photo"]), audio=str(media["speech"]),
                                       progress=jobs.no_progress)  # fmt: skip
    shown = [str(w.message) for w in caught if jobs.HAAR_NOTE in str(w.message)]
    assert shown == [note.replace("<", "&lt;").replace(">", "&gt;")] and status.endswith("faces: haar")
    assert jobs.for_visitor(LipSyncError("No face in <b>.png")).message == "No face in &lt;b&gt;.png"


def test_a_failed_request_leaves_no_folder_and_explains_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "requests", folders.RequestFolders(tmp_path))
    for raised, shown in ((RuntimeError("boom\n  at paddle"), "inside lipsync (RuntimeError: boom)"),
                          (LipSyncError("No face found in x.png"), "No face found in x.png")):  # fmt: skip
        with pytest.raises(gr.Error) as caught:
            with jobs.request_folder():
                raise raised
        assert shown in caught.value.message and caught.value.__cause__ is raised
    assert not list(tmp_path.iterdir()) and not folders.requests.active()


def test_box_text_is_parsed():
    assert jobs.parse_box("") is None and jobs.parse_box("  ") is None
    assert jobs.parse_box("10, 200 30 220") == (10, 200, 30, 220)
    for bad in ("1 2 3", "a b c d", "1 2 3 4 5"):
        with pytest.raises(LipSyncError, match="four whole numbers"):
            jobs.parse_box(bad)


def test_progress_is_one_bar_across_the_stages():
    seen = []
    report = jobs.progress_reporter(lambda value, desc: seen.append((value, desc)))
    for stage, done, total in [("speech", 0, 1), ("speech", 1, 1), ("reading audio", 1, 1),
                               ("loading the model", 0, 1), ("loading the model", 1, 1), ("detecting faces", 16, 40),
                               ("detecting faces", 40, 40), ("lip-syncing", 64, 87), ("lip-syncing", 87, 87),
                               ("encoding", 0, 1), ("encoding", 1, 1)]:  # fmt: skip
        report(stage, done, total)
    values = [v for v, _ in seen]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert seen[3][1] == "loading the model" and seen[4][0] > seen[3][0]
    assert seen[5][1] == "detecting faces 16/40" and seen[-1][1] == "encoding"


def test_faces_found_while_the_first_frames_are_lip_synced_leave_the_bar_on_lip_syncing():
    seen = []
    report = jobs.progress_reporter(lambda value, desc: seen.append((value, desc)))
    for stage, done, total in [("detecting faces", 0, 90), ("detecting faces", 25, 90), ("lip-syncing", 16, 87),
                               ("detecting faces", 50, 90), ("lip-syncing", 32, 87), ("detecting faces", 90, 90),
                               ("lip-syncing", 87, 87)]:  # fmt: skip
        report(stage, done, total)
    assert [desc for _, desc in seen] == ["detecting faces 0/90", "detecting faces 25/90", "lip-syncing 16/87",
                                          "lip-syncing 32/87", "lip-syncing 87/87"]  # fmt: skip
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


def test_every_engine_stage_has_its_own_share_of_the_bar():
    from lipsync.types import STAGE_ENHANCE, STAGES

    assert list(jobs.ENHANCED_STAGES) == list(STAGES)  # the engine's order
    assert list(jobs.STAGES) == [stage for stage in STAGES if stage != STAGE_ENHANCE]  # without enhancement
    for table in (jobs.STAGES, jobs.ENHANCED_STAGES):
        shares = list(table.values())
        assert shares[0][0] == 0.0 and shares[-1][1] == 1.0
        assert all(start < end for start, end in shares)
        assert all(before[1] == after[0] for before, after in zip(shares, shares[1:]))  # no gaps, no overlaps


def test_the_status_line_names_the_detector_that_found_the_faces():
    from lipsync.engine import HAAR_STOOD_IN
    from lipsync.pipeline import RunResult

    assert jobs.HAAR_NOTE in HAAR_STOOD_IN  # the engine's words, which the app reads

    stood_in = ("The S3FD face detector's weights are not available here (no file), so OpenCV's Haar detector "
                "found the faces.",)  # fmt: skip
    ran = RunResult(Path("out.mp4"), 30, 25.0, 4.2, "cpu", "wav2lip_hq", "2.6.2")
    assert jobs.status_line(ran, LipSyncOptions(), None).endswith("· 4.2 s · faces: sfd")
    assert jobs.status_line(replace(ran, notes=stood_in), LipSyncOptions(), None).endswith("faces: haar")
    assert jobs.faces_found_by(ran, LipSyncOptions(face_detector="haar")) == "haar"
    assert jobs.faces_found_by(ran, LipSyncOptions(box=(0, 10, 0, 10))) == "fixed box"
    followed = LipSyncOptions(box=(0, 10, 0, 10), follow_box=True)
    assert jobs.faces_found_by(ran, followed) == "box followed from the first frame"
    speech = tts.Speech(Path("s.wav"), tts.ENGINE_ESPEAK, "en-us", "offline")
    assert jobs.status_line(ran, LipSyncOptions(), speech).endswith("faces: sfd · voice: espeak-ng en-us")
    assert jobs.status_line(replace(ran, precision="bf16"), LipSyncOptions(), None).startswith(
        "wav2lip_hq on cpu · bf16 · paddle 2.6.2 · 30 frames"), "the precision the gate chose is named"
    cutaway = replace(ran, frames_without_face=12)
    assert jobs.status_line(cutaway, LipSyncOptions(face_index=1), None).endswith(
        "faces: sfd, face 1 from the left · 12 of 30 frames had no face (left unchanged)")


def test_two_clicks_make_a_face_box_from_the_eyebrows_to_the_chin():
    """In the picture's pixels as shown, in either order; scaled to the run's frames (a resize factor of 2 halves
    them); as wide as tall, inside the frame; clicks closer than a face can be are a slip."""
    assert picker.clicked_box((200, 100), (210, 300), (640, 480), (640, 480)) == (100, 300, 105, 305)
    assert picker.clicked_box((210, 300), (200, 100), (640, 480), (640, 480)) == (100, 300, 105, 305), "chin first"
    assert picker.clicked_box((200, 100), (210, 300), (640, 480), (320, 240)) == (50, 150, 52, 152)
    assert picker.clicked_box((20, 100), (30, 300), (640, 480), (640, 480)) == (100, 300, 0, 125), "inside the frame"
    assert picker.clicked_box((200, 100), (200, 110), (640, 480), (640, 480)) is None


class _Click:  # what gradio hands a select listener: the pixel clicked, (x, y), in the picture as shown
    def __init__(self, x: int, y: int) -> None:
        self.index = [x, y]


def test_a_picture_without_a_face_waits_for_two_clicks_which_set_the_face_box(media, tmp_path):
    """No face found in a picture: the picker shows how to click the face; the first click marks the eyebrows, the
    second the chin and sets the box, shown as a face thumbnail that is not a face to choose; a new picture empties
    the box. A picture with faces takes no clicks; a box typed by hand is never emptied."""
    import cv2
    import numpy as np

    blank = tmp_path / "drawing.png"
    drawing = np.full((240, 320, 3), 200, np.uint8)
    drawing[85:135, 130:180] = (0, 0, 255)  # red, in the middle of the box the clicks below make
    cv2.imwrite(str(blank), drawing)
    shown, heading, gallery, automatic, index, box, clicks, still = picker.faces_of(str(blank), None, "haar", 1, "")
    assert shown["visible"] and heading == picker.NO_FACE_HEADING and gallery.visible is False
    assert automatic["visible"] is False and index is None and still.visible is False
    assert clicks == {"top": None, "box": None, "sizes": [[320, 240], [320, 240]]}
    heading, box, clicks, gallery = picker.clicked(_Click(150, 60), str(blank), clicks)
    assert heading.startswith("**Now click the bottom of the chin.**") and clicks["top"] == [150, 60]
    heading, box, clicks, gallery = picker.clicked(_Click(160, 160), str(blank), clicks)
    assert box == "60 160 105 205" and heading.startswith("**Face box set: 60 160 105 205**")
    assert clicks["top"] is None and clicks["box"] == [60, 160, 105, 205]
    (thumb, label), = gallery.constructor_args["value"]  # as given (its .value is gradio's processed copy)
    assert label == picker.BOX_LABEL and gallery.visible is True
    assert tuple(np.asarray(thumb)[48, 48]) == (255, 0, 0), "the box's middle, in RGB"
    thumbnail_clicked = SimpleNamespace(index=0)  # a gallery's select: the thumbnail's place
    assert picker.chosen(thumbnail_clicked, clicks) == gr.skip(), "the box's thumbnail is no face to choose"
    assert picker.chosen(SimpleNamespace(index=1), None) == 1, "faces found: the face clicked is face_index"
    *_, halved, _ = picker.faces_of(str(blank), None, "haar", 2, "")
    assert halved["sizes"] == [[320, 240], [160, 120]], "the run's frames are halved by the resize factor"
    halved = picker.clicked(_Click(160, 160), str(blank), {**halved, "top": [150, 60]})
    assert halved[1] == "30 80 52 102", "in the pixels of frames halved by the resize factor"
    *_, emptied, clicks, _ = picker.faces_of(str(media["photo"]), None, "haar", 1, box, clicks)
    assert emptied == "" and clicks is None, "the clicked box was the last picture's"
    assert picker.clicked(_Click(10, 10), str(media["photo"]), clicks) == (gr.skip(), gr.skip(), None, gr.skip()), \
        "faces were found: a click on the picture changes nothing"
    typed = {"top": None, "box": [60, 160, 105, 205]}
    *_, kept, clicks, _ = picker.faces_of(str(blank), None, "haar", 1, "1 2 3 4", typed)
    assert kept == gr.skip() and clicks["box"] is None, "a box the visitor typed stays"
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    shown, *_, clicks, still = picker.faces_of(str(damaged), None, "haar", 1, "")
    assert not shown["visible"] and clicks is None, "nothing to click on: the run says what is wrong with the file"


def test_a_video_without_a_face_shows_its_first_frame_to_click_the_face_on(tmp_path):
    """No face found in a video: its first frame is shown (as a player shows it: an anamorphic video's pixels
    stretched) and clicked on as a picture is; the box is in the pixels of the run's frames."""
    import cv2
    import numpy as np
    from media_helpers import face_sketch, ffmpeg

    wide = tmp_path / "anamorphic.mp4"  # 320×240 stored, shown 2:1 wide (640×240); red in its middle
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=320x240:d=1,drawbox=x=140:y=100:w=40:h=40:c=red:t=fill",
           "-vf", "setsar=2", "-pix_fmt", "yuv420p", wide)  # fmt: skip
    shown, heading, gallery, automatic, index, box, clicks, still = picker.faces_of(None, str(wide), "haar", 1, "")
    assert shown["visible"] and heading == picker.NO_FACE_VIDEO_HEADING and gallery.visible is False
    frame = np.asarray(still.constructor_args["value"])
    assert still.visible is True and frame.shape == (240, 640, 3), "shown as a player shows it"
    assert tuple(frame[120, 320] // 16) == tuple(np.array((255, 0, 0)) // 16), "RGB, the red box in the middle"
    assert clicks == {"top": None, "box": None, "sizes": [[640, 240], [320, 240]]}
    shown_still = tmp_path / "frame.png"  # as gradio hands the clicked still to the listener: a file
    cv2.imwrite(str(shown_still), frame[..., ::-1])
    _, _, clicks, _ = picker.clicked(_Click(320, 70), str(shown_still), clicks)
    heading, box, clicks, gallery = picker.clicked(_Click(320, 170), str(shown_still), clicks)
    assert box == "70 170 135 185", "in the stored pixels: the face's 100 rows are 50 stored columns wide"
    assert heading.startswith("**Face box set: 70 170 135 185**")
    (thumb, _), = gallery.constructor_args["value"]
    assert tuple(np.asarray(thumb)[48, 48] // 16) == (15, 0, 0), "the box's thumbnail: the red in its middle"
    *_, emptied, clicks, still = picker.faces_of(None, str(wide), "haar", 2, box, clicks)
    assert emptied == "" and clicks["sizes"] == [[320, 120], [160, 120]], "a new resize factor: click again"
    drawing, faded = tmp_path / "sketch.png", tmp_path / "fade.mp4"  # a drawing fading in over 20 frames
    cv2.imwrite(str(drawing), face_sketch())
    ffmpeg("-loop", "1", "-i", drawing, "-t", "2", "-r", "25", "-vf", "fade=in:0:20", "-pix_fmt", "yuv420p",
           faded)  # fmt: skip
    *_, still = picker.faces_of(None, str(faded), "haar", 1, "")
    shown = np.asarray(still.constructor_args["value"]).astype(int)
    assert np.abs(shown - face_sketch()[..., ::-1]).mean() < 40, "the frame to click on is past the fade, not black"


def test_a_face_box_given_for_a_video_follows_the_face_and_one_for_a_picture_stays():
    box = "60 160 105 205"
    assert jobs.Form(face_video="v.mp4", box=box).options().follow_box is True
    assert jobs.Form(face_image="p.png", box=box).options() == LipSyncOptions(box=(60, 160, 105, 205))
    assert jobs.Form(face_video="v.mp4").options().follow_box is False, "no box: the detector finds the face"


def test_the_face_index_comes_from_the_form_as_a_whole_number():
    form_args = ("wav2lip_hq", (0, 10, 0, 0), 1, True, False, 25, "", "feather", "sfd", "cpu", False)
    assert jobs.options_from_form(*form_args).face_index is None
    assert jobs.options_from_form(*form_args, 1.0).face_index == 1
    for bad, message in ((1.5, "whole number"), (-1, "≥ 0")):
        with pytest.raises(LipSyncError, match=message):
            jobs.options_from_form(*form_args, bad)


def test_one_face_and_one_voice_at_a_time(tmp_path):
    given = limits.Limits()
    with pytest.raises(LipSyncError, match="not both"):
        jobs.one_face("a.png", "b.mp4", given)
    with pytest.raises(LipSyncError, match="not both"):
        jobs.speech_for("a.wav", "hello", tts.DEFAULT_VOICE, 0, tmp_path, given, jobs.no_progress)
    assert form.keep_one("", "text") == (gr.update(), gr.update())
    cleared, tabs = form.keep_one("/tmp/face.png", "picture")
    assert cleared is None and tabs.selected == "picture"


def test_a_video_with_sound_and_no_voice_speaks_its_own(tmp_path, media, monkeypatch):
    """No audio and no text: a face video with sound is its own speech (a dubbed video re-synced), and the page
    says so; a silent video or a picture still asks for a voice, saying a video with sound would not."""
    from media_helpers import ffmpeg

    told: list = []
    monkeypatch.setattr(gr, "Info", lambda message, *args, **kwargs: told.append(message))
    talking = tmp_path / "talking.mp4"
    ffmpeg("-i", media["video"], "-i", media["speech"], "-c:v", "copy", "-c:a", "aac", talking)
    given = limits.Limits()
    voice = jobs.speech_for(None, "", tts.DEFAULT_VOICE, 0, tmp_path, given, jobs.no_progress,
                            face_video=str(talking))  # fmt: skip
    assert (voice.path, voice.spoken, told) == (str(talking), None, [jobs.OWN_SOUND])
    assert voice.seconds == pytest.approx(media_seconds(media["speech"]), abs=0.05), "its sound's length, not 2 s"
    with pytest.raises(gr.Error, match=r"face video's sound lasts 3.4 s; this app accepts up to 3 s"):
        jobs.speech_for(None, "", tts.DEFAULT_VOICE, 0, tmp_path, limits.Limits(max_seconds=3), jobs.no_progress,
                        face_video=str(talking))  # fmt: skip
    for silent in (str(media["video"]), None):
        with pytest.raises(LipSyncError, match=r"Give a voice: .* \(a video with sound speaks its own"):
            jobs.speech_for(None, " ", tts.DEFAULT_VOICE, 0, tmp_path, given, jobs.no_progress, face_video=silent)


def test_a_request_probes_each_file_once(tmp_path, monkeypatch, media):
    """The face video and the speech are each measured once per request, and every check (length, sharpening's
    limit, the stream's pacing) uses that measure: a probe is an ffprobe run, or a decode when the header is silent."""
    from lipsync import video
    from media_helpers import ffmpeg

    probed: list = []
    real_probe = video.probe
    monkeypatch.setattr(video, "probe", lambda path, **kw: probed.append(Path(path).name) or real_probe(path, **kw))
    talking = tmp_path / "talking.mp4"
    ffmpeg("-i", media["video"], "-i", media["speech"], "-c:v", "copy", "-c:a", "aac", talking)
    monkeypatch.setattr(gr, "Info", lambda *args, **kwargs: None)
    given = limits.Limits(max_seconds=100, max_enhanced_seconds=100)
    dubbed = jobs.prepare(given, jobs.Form(face_video=str(talking), face_enhancement=True), tmp_path, jobs.no_progress)
    assert probed == ["talking.mp4"] and dubbed.speech_path == str(talking)
    assert dubbed.speech_seconds == pytest.approx(media_seconds(talking), abs=0.05)
    probed.clear()
    voiced = jobs.prepare(given, jobs.Form(face_video=str(media["video"]), audio=str(media["speech"]),
                                           face_enhancement=True), tmp_path, jobs.no_progress)  # fmt: skip
    assert sorted(probed) == sorted([media["video"].name, media["speech"].name])
    assert voiced.speech_seconds == pytest.approx(media_seconds(media["speech"]), abs=0.05)


def test_an_uploaded_heic_is_shown_as_a_jpeg_and_nothing_else_is_touched(tmp_path, media):
    import numpy as np

    from lipsync import picture

    heic = heic_copy(media["photo"], tmp_path)
    shown = Path(form.viewable_picture(str(heic)))
    assert shown == tmp_path / "IMG_0001.jpg"
    difference = np.abs(picture.read_image(shown).astype(int) - picture.read_image(heic).astype(int))
    assert difference.mean() < 1.5 and difference.max() <= 16, "near the photo: it is what the run reads"
    cut = tmp_path / "cut.heic"
    cut.write_bytes(heic.read_bytes()[:2000])
    for path in (str(media["photo"]), str(cut), None):
        assert form.viewable_picture(path) == gr.update(), path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG_0001.HEIC", "IMG_0001.jpg", "cut.heic"]


def test_voice_picker_keeps_a_matching_voice():
    assert voices.voices_for_language("en-GB", "en-GB-RyanNeural").value == "en-GB-RyanNeural"
    switched = voices.voices_for_language("fr-FR", "en-GB-RyanNeural")
    assert switched.value == "fr-FR-VivienneMultilingualNeural"
    assert ("Denise (female)", "fr-FR-DeniseNeural") in switched.choices


def test_finished_processes_lose_their_example_cache(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (tmp_path / f"examples-{ended.pid}").mkdir()
    (tmp_path / f"examples-{os.getpid()}").mkdir()
    (tmp_path / "examples-notapid").mkdir()
    assert folders.examples_cache(tmp_path) == tmp_path / f"examples-{os.getpid()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"examples-{os.getpid()}", "examples-notapid"])
