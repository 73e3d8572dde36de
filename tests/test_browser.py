"""The app in a real browser: Debian's headless Chromium, driven by Playwright (no browser download)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

playwright = pytest.importorskip("playwright.sync_api")
from test_app import launch_app, readme_block  # noqa: E402  (tests/ is on sys.path: conftest puts it there)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 1000}
PAGE_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000  # the example runs the networks on CPU

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
        page.goto(server.url)
        yield page
        browser.close()


def test_a_visitor_fills_the_form_runs_an_example_and_sees_the_video(page, tmp_path):
    expect = playwright.expect
    expect(page.locator("#run")).to_be_visible()
    page.locator("#face-image input[type=file]").set_input_files(str(ROOT / "examples" / "astronaut.jpg"))
    expect(page.locator("#face-image img")).to_be_visible()
    page.locator("#text textarea").fill("Hello from the browser.")
    page.locator("#preview").click()
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^voice: espeak-ng en-us$"))

    page.get_by_text("Cartoon + typed text").click()
    expect(page.locator("#text textarea")).to_have_value(re.compile("I'm a cartoon"))
    video = page.locator("#result video")
    expect(video).to_have_attribute("src", re.compile(r"lipsync\.mp4"), timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"wav2lip_hq on cpu .* frames at 25 fps"))
    page.wait_for_function("document.querySelector('#result video').readyState >= 1")  # Chromium decoded its header
    assert page.evaluate("document.querySelector('#result video').duration") > 2

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_the_readme_iframe_snippet_embeds_the_app(page, server):
    snippet = readme_block("iframe-snippet")
    assert "https://your-name-lipsync.hf.space" in snippet
    embedded = snippet.replace("https://your-name-lipsync.hf.space", server.url)
    page.set_content(f"<!doctype html><title>A blog</title><p>My post</p>{embedded}")
    frame = page.frame_locator("iframe")
    playwright.expect(frame.locator("#run")).to_be_visible()
    playwright.expect(frame.get_by_text("Cartoon + typed text")).to_be_visible()
