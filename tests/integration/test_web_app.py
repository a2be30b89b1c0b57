"""The web app in a real browser (Playwright driving Debian's chromium) against the real stack.

Upload a synthetic two-face video through the page, see the verdict, face cards whose images loaded, the
timeline seeking the player, the heatmap toggle, the report download, the recent jobs and delete; then the
error cases (a wrong key, a file that is not a video). Screenshots go to ``DEEPFAKE_SCREENSHOT_DIR`` or the
test run's temporary folder (``screenshots*`` under pytest's basetemp) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.local_stack import LocalStack
from tests import synth
from tests.settings import SuiteSettings

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DEEPFAKE_SCREENSHOT_DIR when set (pytest keeps only its last few temporary folders), else one under
    the test run's basetemp."""
    folder = SuiteSettings().screenshot_dir
    if folder is None:
        return tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def offline_context(browser, gateway_url: str):
    """A browser context that refuses (and records) every request to anywhere but the gateway at
    `gateway_url`: the app and the docs must work on a machine without internet."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.outside = []

    def route(route) -> None:
        if route.request.url.startswith(gateway_url + "/"):
            route.continue_()
        else:
            context.outside.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return context


@pytest.fixture()
def page(browser, stack: LocalStack) -> Page:
    context = offline_context(browser, stack.urls["gateway"])
    page = context.new_page()
    page.goto(stack.urls["gateway"] + "/")
    yield page
    assert context.outside == []
    context.close()


def analyse(page: Page, key: str, video: Path) -> None:
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("file-input").set_input_files(str(video))
    page.get_by_test_id("analyse").click()


def test_upload_verdict_faces_timeline_report_and_delete(page, stack, stack_videos, screenshots, gateway):
    analyse(page, stack.api_key, stack_videos["two"])
    expect(page.get_by_test_id("analyse")).to_be_disabled()  # no second job from a double click
    expect(page.get_by_test_id("verdict")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("analyse")).to_be_enabled()
    assert page.get_by_test_id("upload-progress").evaluate("bar => bar.value") == 1

    job = gateway.get("/v1/jobs", params={"limit": 1}).json()[0]
    result = gateway.get(f"/v1/jobs/{job['id']}/result").json()
    words = {"fake": "Likely manipulated", "real": "No manipulation found"}
    expect(page.get_by_test_id("verdict")).to_contain_text(words[result["verdict"]])
    expect(page.get_by_test_id("confidence")).to_contain_text(f"{round(result['score'] * 100)}%")
    assert page.evaluate("document.activeElement.id") == "verdict"  # keyboard users land on the answer

    cards = page.get_by_test_id("face-card")
    expect(cards).to_have_count(len(result["tracks"]))
    assert len(result["tracks"]) == 2
    # This video has no audio: the two signals say the score is the visual one, each face says why.
    expect(page.get_by_test_id("signals")).to_contain_text("no lip-sync score")
    expect(cards.nth(0).get_by_test_id("audio-visual")).to_contain_text("the video has no audio")
    first = cards.nth(0)
    first.locator("img.face").wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=face-card] img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")  # fmt: skip
    expect(first).to_contain_text(f"Score {result['tracks'][0]['score']:.2f}")
    top = max(range(2), key=lambda i: result["tracks"][i]["score"])
    expect(cards.nth(top)).to_contain_text("Decided the verdict")
    expect(cards.nth(1 - top)).to_contain_text("Counted, but another face scored higher")

    thumb_src = first.locator("img.face").get_attribute("src")
    first.get_by_test_id("heatmap-toggle").click()
    expect(first.get_by_test_id("heatmap-toggle")).to_have_attribute("aria-pressed", "true")
    assert first.locator("img.face").get_attribute("src") != thumb_src
    page.wait_for_function("() => document.querySelector('[data-testid=face-card] img.face').naturalWidth")

    # The timeline: one point per scored sampled moment; Enter on a point seeks the player there.
    scored = [p for p in result["timeline"] if p["score"] is not None]
    points = page.get_by_test_id("timeline").locator("circle")
    expect(points).to_have_count(len(scored))
    page.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=20_000)
    points.nth(len(scored) - 1).focus()
    page.keyboard.press("Enter")
    seek_to = scored[-1]["t"]
    page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {seek_to}) < 0.1")
    points.nth(0).click()  # a mouse click on the chart seeks to the time under the pointer
    seek_to = scored[0]["t"]
    page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {seek_to}) < 0.1")
    page.screenshot(path=str(screenshots / "result-desktop.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_test_id("report-link").click()
    report = Path(download_info.value.path()).read_text()
    assert "Deepfake analysis report" in report and result["video"]["sha256"] in report
    assert report.count("data:image/jpeg;base64,") == 3 * len(result["tracks"])
    # Self-contained: rendered with every network request refused, it asks for nothing and shows its images.
    offline = page.context.new_page()
    requested: list[str] = []
    offline.route("**/*", lambda route: (requested.append(route.request.url), route.abort()))
    offline.set_content(report)
    offline.wait_for_function("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    assert requested == [] and offline.locator("img").count() == 3 * len(result["tracks"])
    offline.screenshot(path=str(screenshots / "report.png"), full_page=True)
    offline.close()

    # Phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # The timeline is redrawn at the phone's width, so its labels stay readable.
    chart = "document.querySelector('[data-testid=timeline] svg')"
    page.wait_for_function(f"() => {chart}.viewBox.baseVal.width <= 390")
    page.screenshot(path=str(screenshots / "result-phone.png"), full_page=True)

    jobs = page.get_by_test_id("job")
    expect(jobs.first).to_contain_text("two.mp4")
    count = jobs.count()
    jobs.first.get_by_test_id("delete-job").click()
    expect(page.get_by_test_id("job")).to_have_count(count - 1) if count > 1 else expect(
        page.get_by_test_id("jobs")
    ).to_contain_text("No jobs yet")
    assert gateway.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_errors_replace_each_other_and_say_what_to_do(page, stack, tmp_path, screenshots):
    analyse(page, "not-the-key", synth.write_random_bytes(tmp_path / "noise.mp4"))
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("API key was refused")
    expect(error).to_contain_text("(unauthorized: ")  # the server's code and message, as the live tab says
    expect(page.get_by_test_id("analyse")).to_be_enabled()
    analyse(page, stack.api_key, synth.write_random_bytes(tmp_path / "noise.mp4"))
    expect(error).to_contain_text("not_a_video")
    expect(error).not_to_contain_text("API key")  # the old error is gone, not stacked
    expect(page.get_by_test_id("error")).to_have_count(1)
    expect(page.get_by_test_id("verdict")).to_be_hidden()
    page.screenshot(path=str(screenshots / "error.png"), full_page=True)


def test_api_docs_render_without_internet(browser, stack, screenshots):
    context = offline_context(browser, stack.urls["gateway"])
    page = context.new_page()
    page.goto(stack.urls["gateway"] + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Deepfake detector API", timeout=30_000)
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    page.screenshot(path=str(screenshots / "swagger.png"))
    page.goto(stack.urls["gateway"] + "/redoc")
    expect(page.locator("h1").first).to_contain_text("Deepfake detector API", timeout=30_000)
    page.screenshot(path=str(screenshots / "redoc.png"))
    assert context.outside == []
    context.close()


def test_upload_progress_is_shown_while_the_file_is_sent(page, stack, tmp_path, screenshots):
    # Noise compresses badly: a few MB in 12 frames; the upload is throttled so it lasts seconds.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 854, 3), dtype=np.uint8) for _ in range(12)]
    video = synth.write_video(tmp_path / "noise.mp4", frames, crf=10)
    size_mb = video.stat().st_size / 1e6
    assert size_mb > 2, size_mb
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    throttle = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 512 * 1024}
    cdp.send("Network.emulateNetworkConditions", throttle)
    analyse(page, stack.api_key, video)
    bar = "document.querySelector('[data-testid=upload-progress]').value"
    page.wait_for_function(f"() => {bar} > 0.2 && {bar} < 0.9", timeout=30_000)
    uploading = re.compile(r"Uploading: \d+% \([\d.]+ MB of [\d.]+ MB\)")
    expect(page.get_by_test_id("status")).to_contain_text(uploading)
    page.screenshot(path=str(screenshots / "uploading.png"))
    cdp.send("Network.emulateNetworkConditions", {**throttle, "uploadThroughput": -1})
    expect(page.get_by_test_id("verdict")).to_contain_text("Inconclusive", timeout=120_000)
    expect(page.get_by_test_id("face-card")).to_have_count(0)
    expect(page.get_by_test_id("warnings")).to_contain_text("no usable face")
    page.screenshot(path=str(screenshots / "inconclusive.png"), full_page=True)


def test_a_rate_limited_poll_waits_instead_of_failing_the_job(page, stack, stack_videos):
    # The stack's rate limit is high for the other tests; the gateway's real 429 answer (error shape plus
    # Retry-After) is put in front of the first status poll only, so the page must wait and go on polling.
    limited = []

    def first_poll_limited(route) -> None:
        if route.request.method == "GET" and not limited:
            limited.append(route.request.url)
            body = '{"error": {"code": "rate_limited", "message": "rate limit exceeded", "details": {}}}'
            route.fulfill(
                status=429, body=body, headers={"Retry-After": "1", "Content-Type": "application/json"}
            )
        else:
            route.continue_()

    page.route(re.compile(r".*/v1/jobs/[0-9a-f]{32}$"), first_poll_limited)
    analyse(page, stack.api_key, stack_videos["face"])
    expect(page.get_by_test_id("verdict")).to_be_visible(timeout=120_000)
    assert len(limited) == 1
    expect(page.get_by_test_id("error")).to_be_hidden()


def tab_until(page: Page, test_id: str, limit: int = 60) -> None:
    """Press Tab until the element with ``test_id`` has the focus (fails after ``limit`` presses)."""
    for _ in range(limit):
        if page.evaluate("document.activeElement.dataset.testid") == test_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {test_id}")


def test_the_whole_flow_works_from_the_keyboard(page, stack, stack_videos):
    page.get_by_test_id("file-input").set_input_files(
        str(stack_videos["face"])
    )  # the file dialog itself is the OS's
    page.get_by_test_id("api-key").focus()
    page.keyboard.type(stack.api_key)
    tab_until(page, "analyse")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("verdict")).to_be_visible(timeout=120_000)
    assert page.evaluate("document.activeElement.id") == "verdict"
    # This video has speech: both signals are shown (not fused: the service default), and the face shows
    # its lip-sync score.
    expect(page.get_by_test_id("signals")).to_contain_text("not fused into the score")
    expect(page.get_by_test_id("audio-visual").first).to_contain_text("out of sync")
    tab_until(page, "heatmap-toggle")
    page.keyboard.press("Space")
    expect(page.get_by_test_id("heatmap-toggle")).to_have_attribute("aria-pressed", "true")
    tab_until(page, "report-link")
    with page.expect_download() as download_info:
        page.keyboard.press("Enter")
    assert "Deepfake analysis report" in Path(download_info.value.path()).read_text()
