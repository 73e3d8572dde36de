"""The app in a real browser: Debian's headless Chromium, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")
from conftest import SPEECH_TEXT, ffprobe, heic_copy, media_seconds  # noqa: E402
from media_helpers import SKETCH_BOX, face_sketch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from test_app import AV_TOLERANCE_S, launch_app, readme_block  # noqa: E402  (conftest put tests/ on sys.path)

from lipsync.options import DEFAULT_PADS  # noqa: E402
from webapp import examples, folders, jobs  # noqa: E402  (test_app put the repository on sys.path)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 1000}
PAGE_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000  # a job runs the networks on CPU
SCREENSHOTS_ENV = "LIPSYNC_SCREENSHOTS"  # a folder to keep the screenshots in (default: the test's tmp_path)
MIN_SCREENSHOT_BYTES = 20_000  # a blank or broken page compresses to less
HAVE_CURRENT_DATA = 2  # HTMLMediaElement.readyState once the browser decoded a frame
MIN_VIDEO_S = 1  # every result here lasts longer (the shortest speech, "Hello from the browser.", 1.2 s)
ESPEAK_WARNING = "Spoken offline by espeak-ng"
STAGE_LABEL = re.compile("^(" + "|".join(re.escape(stage) for stage in jobs.STAGES) + ")")
# what ran, from the start of the status line; the device may say why not the GPU
STATUS = re.compile(
    r"^wav2lip_hq on cpu( \([^)]*\))? · (fp32|bf16) · paddle \S+ · \d+ frames at 25 fps · \d+\.\d s · faces: haar"
)
ENCODING = jobs.STAGE_ENCODE
STREAM_PADDING_S = 0.1  # gradio's stream re-times its AAC frames: its end may differ from the mp4's by a frame or two
# When the result starts playing, and when each progress stage first shows, from the click on "Make it speak".
WATCH_THE_RUN = """
window.run = {clicked: performance.now(), playing: null, stages: {}, stalls: 0, starved: false};
document.querySelector('#run').addEventListener('click', () => { window.run.clicked = performance.now(); },
                                                {capture: true, once: true});
const stage = () => {
  const bar = document.querySelector('#status [role=progressbar]');
  const label = bar && bar.getAttribute('aria-label');
  const name = label && label.split(' ').filter(w => !/^[0-9]+[/][0-9]+$/.test(w)).join(' ');
  if (name && !(name in window.run.stages)) window.run.stages[name] = performance.now();
  const video = document.querySelector('#result video');
  if (window.run.playing === null && video && !video.paused && video.currentTime > 0) {
    window.run.playing = performance.now();
  }
  if (window.run.playing !== null && video && !video.ended) {  // the player waiting for data: a stall begins
    const starved = video.readyState < HTMLMediaElement.HAVE_FUTURE_DATA;
    if (starved && !window.run.starved) window.run.stalls += 1;
    window.run.starved = starved;
  }
};
new MutationObserver(stage).observe(document, {childList: true, subtree: true, attributes: true});
setInterval(stage, 20);
"""
# Every toast's text, collected as toasts appear: they vanish after a few seconds.
RECORD_TOASTS = """
window.toasts = [];
new MutationObserver(() => {
  for (const toast of document.querySelectorAll('[data-testid="toast-text"]:not([data-seen])')) {
    toast.setAttribute('data-seen', '');
    window.toasts.push(toast.textContent.trim());
  }
}).observe(document, {childList: true, subtree: true});
"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(isolated_weights, tmp_path_factory):
    running = launch_app(tmp_path_factory.mktemp("browser-app"))
    yield running
    running.stop()


@pytest.fixture
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.add_init_script(RECORD_TOASTS)
        page.goto(server.url)
        yield page
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {folder}")
    return folder


def shoot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > MIN_SCREENSHOT_BYTES
    return path


def toasts(page) -> list:
    """The texts of the toasts shown since the page loaded (or since the last call), then forgets them."""
    return page.evaluate("window.toasts.splice(0)")


def _haar_stood_in(seen: list) -> bool:
    """Whether a toast said (as the engine's note) that Haar found the faces because S3FD has no weights."""
    return any(jobs.HAAR_NOTE in t for t in seen)


def wait_for_a_new_result(page, previous_src: str) -> str:
    """Wait until the result video changes (a new stream), the job ended (the mp4 can be downloaded) and the
    browser can play the video; its src."""
    page.wait_for_function("([previous, ready]) => { const v = document.querySelector('#result video');"
                           " return v && v.src && v.src !== previous && v.readyState >= ready; }",
                           arg=[previous_src, HAVE_CURRENT_DATA], timeout=RUN_TIMEOUT_MS)  # fmt: skip
    playwright.expect(page.locator("#download")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    video = page.locator("#result video")
    page.wait_for_function("min => document.querySelector('#result video').duration > min", arg=MIN_VIDEO_S)
    return video.get_attribute("src")


def download_the_mp4(page, folder: Path) -> Path:
    """Click "Download the mp4"; the file the browser saved."""
    with page.expect_download() as saving:
        page.locator("#download").click()
    path = folder / saving.value.suggested_filename
    saving.value.save_as(path)
    return path


def expect_progress(page) -> None:
    """The job's progress bar names an engine stage."""
    bar = page.locator("#status [role=progressbar]")
    playwright.expect(bar).to_have_attribute("aria-label", STAGE_LABEL, timeout=RUN_TIMEOUT_MS)


def test_a_visitor_makes_the_photo_speak_typed_text(page, media, screenshots):
    expect = playwright.expect
    page.locator("#face-image input[type=file]").set_input_files(str(media["photo"]))
    expect(page.locator("#face-image img")).to_be_visible()
    # the picker has shown the face, none chosen: the run must still use the most confident face, not face 0
    expect(page.locator("#faces button.thumbnail-item")).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    page.locator("#text textarea").fill("Hello from the browser.")
    page.locator("#preview").click()
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^voice: espeak-ng en-us$"))
    expect(page.locator("#speech [data-testid=waveform-controls]")).to_be_visible()  # the speech, ready to play
    shoot(page, screenshots, "1-form")

    toasts(page)  # the preview's
    page.locator("#run").click()
    expect_progress(page)
    shoot(page, screenshots, "2-running")
    wait_for_a_new_result(page, "")
    status = page.locator("#status textarea")
    expect(status).to_have_value(re.compile(STATUS.pattern + r" · voice: espeak-ng en-us$"))
    seen = toasts(page)
    assert any(ESPEAK_WARNING in t for t in seen) and _haar_stood_in(seen), seen
    shoot(page, screenshots, "3-result")


def test_the_result_plays_while_it_is_being_made_then_the_mp4_downloads(page, server, media, screenshots, tmp_path):
    """A picture + about 10 s of speech with the networks warm: the result is playing before the job's last
    stage (encoding); then "Download the mp4" gives the whole video. Prints the time from the click to playing."""
    speech = tmp_path / "ten-seconds.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), " ".join([SPEECH_TEXT] * 3)], check=True, capture_output=True)
    Client(server.url, verbose=False, analytics_enabled=False).predict(  # the networks load on a first job
        face_image=handle_file(str(media["photo"])), audio=handle_file(str(media["speech"])), api_name="/lipsync")
    page.locator("#face-image input[type=file]").set_input_files(str(media["photo"]))
    page.get_by_role("tab", name="Audio file").click()
    page.locator("#audio input[type=file]").set_input_files(str(speech))
    playwright.expect(page.locator("#audio [data-testid=waveform-controls]")).to_be_visible()
    page.evaluate(WATCH_THE_RUN)
    page.locator("#run").click()
    playwright.expect(page.locator("#download")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    seen = page.evaluate("window.run")
    playing, encoding = seen["playing"], seen["stages"].get(ENCODING)
    assert playing is not None and encoding is not None, seen
    after = {name: (at - seen["clicked"]) / 1000 for name, at in (("playing", playing), ("encoding", encoding))}
    speech_s = media_seconds(speech)
    print(f"click to result playing: {after['playing']:.1f} s (picture + {speech_s:.1f} s of speech; "
          f"the job's last stage began after {after['encoding']:.1f} s); stalls while playing: {seen['stalls']}")
    assert playing < encoding, "the result plays while it is being made"
    shoot(page, screenshots, "4-streamed")
    mp4 = download_the_mp4(page, tmp_path)
    info = ffprobe(mp4)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - speech_s) <= AV_TOLERANCE_S
    streamed = page.locator("#result video").evaluate("v => v.duration")
    assert abs(streamed - speech_s) <= AV_TOLERANCE_S + STREAM_PADDING_S, "every segment was streamed"


def test_every_example_plays_leaves_the_options_alone_and_comes_from_the_cache_again(page, server, screenshots):
    expect = playwright.expect
    page.locator("#advanced button").click()  # open Advanced, to see the options after each example
    detector = page.locator(f"#detector input[value={jobs.DEFAULTS.face_detector}]")
    expect(detector).to_be_checked()
    src, first = "", {}
    thumbnails = page.locator("#examples img")
    playwright.expect(thumbnails).to_have_count(len(examples.EXAMPLE_SET))  # each example shows its face
    assert all(img.evaluate("i => i.complete && i.naturalWidth > 0") for img in thumbnails.all())
    for index, example in enumerate(examples.EXAMPLE_SET):
        page.get_by_text(example.label).click()
        expect_progress(page)  # the first click runs the job, with its progress bar
        src = wait_for_a_new_result(page, src)
        status = page.locator("#status textarea").input_value()
        assert STATUS.match(status), status
        seen = toasts(page)
        # the cartoon asks for Haar itself; the others ask for S3FD, which has no weights here
        assert _haar_stood_in(seen) == (example.detector == "sfd"), (example, seen)
        expect(detector).to_be_checked()  # the visitor's own next run still gets the default detector
        first[index] = (src, status, _kept(server, index).stat())
        shoot(page, screenshots, f"example-{index}")

    page.locator("#examples img").first.click()  # the thumbnail works as well as the label
    wait_for_a_new_result(page, src)
    expect(page.locator("#status textarea")).to_have_value(first[0][1])
    assert download_the_mp4(page, screenshots).read_bytes() == _kept(server, 0).read_bytes()
    kept = _kept(server, 0).stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (first[0][2].st_ino, first[0][2].st_mtime_ns), "made again"


def _kept(server, index: int) -> Path:
    """The result file the server keeps for an example."""
    [path] = (server.tmp / "lipsync-app").glob(f"{folders.EXAMPLES_PREFIX}*/{index}/{jobs.OUTPUT_NAME}")
    return path


def test_the_four_pads_share_one_row(page):
    page.locator("#advanced button").click()
    pads = page.locator("#pads input[type=number]")
    playwright.expect(pads).to_have_count(len(DEFAULT_PADS))
    boxes = [box.bounding_box() for box in pads.all()]
    assert all(boxes)
    assert max(b["y"] for b in boxes) - min(b["y"] for b in boxes) < 1
    assert all(left["x"] + left["width"] <= right["x"] for left, right in zip(boxes, boxes[1:]))


def test_the_readme_iframe_snippet_embeds_the_app(page, server):
    snippet = readme_block("iframe-snippet")
    assert "https://your-name-lipsync.hf.space" in snippet
    embedded = snippet.replace("https://your-name-lipsync.hf.space", server.url)
    page.set_content(f"<!doctype html><title>A blog</title><p>My post</p>{embedded}")
    frame = page.frame_locator("iframe")
    playwright.expect(frame.locator("#run")).to_be_visible()
    playwright.expect(frame.get_by_text("Cartoon + typed text")).to_be_visible()


def test_the_face_picker_makes_the_second_face_speak(page, astronaut_bgr, tmp_path, screenshots):
    """The astronaut twice, side by side: the picker shows two faces; the second one clicked is the one that
    speaks (its mouth changes in the result, the first one's does not)."""
    import cv2
    import numpy as np
    from conftest import read_video_frames
    from test_who_speaks import CHANGED, CODEC_NOISE, mouth_change

    expect = playwright.expect
    twice = np.concatenate([astronaut_bgr, astronaut_bgr], axis=1)
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), twice)
    page.locator("#face-image input[type=file]").set_input_files(str(photo))
    faces = page.locator("#faces button.thumbnail-item")
    expect(faces).to_have_count(2, timeout=RUN_TIMEOUT_MS)  # found by the app's detector (Haar stands in here)
    faces.nth(1).click()
    expect(faces.nth(1)).to_have_class(re.compile(r"\bselected\b"))
    expect(faces.nth(0)).not_to_have_class(re.compile(r"\bselected\b"))
    shoot(page, screenshots, "picker")
    page.locator("#text textarea").fill("Hello from the browser.")
    page.locator("#run").click()
    wait_for_a_new_result(page, "")
    expect(page.locator("#status textarea")).to_have_value(re.compile(STATUS.pattern + ", face 1 from the left · "))
    result = download_the_mp4(page, tmp_path)
    frame = read_video_frames(result)[8]
    assert mouth_change(frame, twice, 512) > CHANGED and mouth_change(frame, twice, 0) < CODEC_NOISE


def test_an_iphone_s_heic_photo_shows_on_the_page(page, media, tmp_path):
    """Chromium cannot show HEIC: the upload is shown as the JPEG the app made of it, and its face is found. (The
    file comes typed image/heic, as a Mac or an iPhone sends it; Linux's Chromium knows no type for .HEIC.)"""
    heic = heic_copy(media["photo"], tmp_path)
    upload = {"name": heic.name, "mimeType": "image/heic", "buffer": heic.read_bytes()}
    page.locator("#face-image input[type=file]").set_input_files(upload)
    shown = page.locator("#face-image img")
    playwright.expect(shown).to_have_attribute("src", re.compile(r"IMG_0001\.jpg$"), timeout=PAGE_TIMEOUT_MS)
    shown.evaluate("img => img.decode()")  # rejects when the browser cannot decode the picture
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [512, 512]
    playwright.expect(page.locator("#faces button.thumbnail-item")).to_have_count(1, timeout=RUN_TIMEOUT_MS)


SKETCH_CLICKS = ((320, 170), (322, 385))  # above the eyebrows, then the chin (SKETCH_BOX's top and bottom)


def _click_the_face(page, shown) -> None:
    """Click above the sketch's eyebrows, then its chin, on the picture shown (at the page's scale); the heading
    states the box, which shows as the picker shows a face found."""
    import numpy as np

    expect = playwright.expect
    heading = page.locator("#picker-heading")
    scale = shown.evaluate("img => img.clientWidth / img.naturalWidth")
    for x, y in SKETCH_CLICKS:
        shown.click(position={"x": x * scale, "y": y * scale})
        expect(heading).to_contain_text("Now click the bottom of the chin" if y < 300 else "Face box set")
    expect(page.locator("#faces button.thumbnail-item")).to_have_count(1)  # the box, shown as a face found is
    placed = re.search(r"Face box set: (\d+) (\d+) (\d+) (\d+)", heading.inner_text())
    assert placed and np.abs(np.array(placed.groups(), int) - SKETCH_BOX).max() <= 2, placed


def _speak_and_check_the_mouth(page, drawing, tmp_path, faces: str) -> None:
    """Run with typed text: the run used the box (the status says how: `faces`), the mouth inside it is redrawn,
    the rest of the drawing stays."""
    import numpy as np
    from conftest import read_video_frames

    page.locator("#text textarea").fill("Hello from the browser.")
    page.locator("#run").click()
    wait_for_a_new_result(page, "")
    playwright.expect(page.locator("#status textarea")).to_have_value(re.compile(" · faces: " + faces))
    frame = read_video_frames(download_the_mp4(page, tmp_path))[8].astype(int)
    changed = np.abs(frame - drawing).max(axis=2)
    assert changed[300:380, 230:410].mean() > 10, "the lower half of the clicked box is redrawn"
    # the H.264 encode moves flat colours by 2–3 levels (a video's, with x264's other preset, by the more); the
    # generator's random weights move what it redraws by tens
    assert changed[:150].mean() < 5 and changed[400:].mean() < 5, "above and below the box, the drawing stays"


def test_a_drawing_without_a_face_found_speaks_where_the_visitor_clicks(page, tmp_path, screenshots):
    """A drawing the detector misses: the picker asks for two clicks on the picture, above the eyebrows then on
    the chin; they set the face box (in the picture's pixels, whatever size the page shows it at), the run uses
    it, and the mouth inside it is redrawn while the rest of the drawing stays."""
    import cv2

    drawing = face_sketch()
    picture = tmp_path / "sketch.png"
    cv2.imwrite(str(picture), drawing)
    page.locator("#face-image input[type=file]").set_input_files(str(picture))
    playwright.expect(page.locator("#picker-heading")).to_contain_text("No face found", timeout=RUN_TIMEOUT_MS)
    _click_the_face(page, page.locator("#face-image img"))
    shoot(page, screenshots, "clicked-box")
    _speak_and_check_the_mouth(page, drawing, tmp_path, "fixed box")


def test_a_cartoon_video_without_a_face_found_speaks_where_the_visitor_clicks_its_first_frame(page, tmp_path,
                                                                                             screenshots):
    """A video the detector finds no face in: the picker shows its first frame to click on, the clicks set the
    face box in the video's pixels, and the run redraws the mouth there."""
    import cv2
    from media_helpers import ffmpeg

    drawing = face_sketch()
    still = tmp_path / "sketch.png"
    cv2.imwrite(str(still), drawing)
    clip = tmp_path / "cartoon.mp4"
    ffmpeg("-loop", "1", "-i", still, "-t", "2", "-r", "25", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p",
           clip)  # fmt: skip
    page.get_by_role("tab", name="Video").click()
    page.locator("#face-video input[type=file]").set_input_files(str(clip))
    playwright.expect(page.locator("#picker-heading")).to_contain_text("the video's first frame",
                                                                       timeout=RUN_TIMEOUT_MS)  # fmt: skip
    _click_the_face(page, page.locator("#face-frame img"))
    shoot(page, screenshots, "clicked-video-box")
    _speak_and_check_the_mouth(page, drawing, tmp_path, "box followed from the first frame")
