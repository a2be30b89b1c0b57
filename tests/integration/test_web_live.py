"""The web app's Live tab in Debian's chromium (Playwright), streaming over the real WebSocket /v1/streams.

The camera is Chromium's fake one playing clip.y4m, a synthesised face clip (tests/synth.py) built here;
the file case plays a synthesised MP4. The servers are the real gateway and preprocessor under uvicorn on
loopback with the in-process ONNX Runtime backend (random-weight model) and the default face detector, as
tests/test_streams_api.py runs them: no Triton, which keeps the test's wall time short (the Triton path
of /v1/streams is covered by the stack tests). Every request to another host is refused.
"""

from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from gateway.app import create_app
from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings
from tests import synth
from tests.integration.test_web_app import CHROMIUM, offline_context, screenshots, sync_playwright
from tests.test_gateway_uploads import serve
from tests.test_streams_api import KEY, gateway_settings

pytestmark = pytest.mark.integration
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
__all__ = ["screenshots"]  # a fixture of test_web_app's, used here too
WIDTH, HEIGHT, FACE_PX = 640, 360, 110.0


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory, random_model_path, default_detector):
    """The gateway's http URL; one live stream per key (the too-many-streams case), the default idle time."""
    tmp = tmp_path_factory.mktemp("live")
    backend = OnnxBackend(random_model_path, threads=1)
    pre = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp / "pp", threads=1, max_streams=4), backend_factory=lambda: backend
    )
    with serve(pre) as (host, pre_port):
        settings = gateway_settings(
            tmp, f"http://{host}:{pre_port}", stream_max_per_key=1, stream_idle_timeout_s=10.0
        )
        with serve(create_app(settings)) as (_, port):
            yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    """Chromium whose camera is a 2 s loop of one face panning left to right (25 fps, 640x360)."""
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    frames, _ = synth.face_frames(50, width=WIDTH, height=HEIGHT, motion="pan", face_px=FACE_PX)
    clip = synth.write_y4m(tmp_path_factory.mktemp("camera") / "clip.y4m", frames)
    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


@pytest.fixture()
def live_page(camera_browser, live_gateway):
    """The page on its Live tab; `page.received` collects every message the server sent on its sockets."""
    context = offline_context(camera_browser, live_gateway)
    page = context.new_page()
    page.received, page.sent_times = [], []
    record = page.received.append

    def sent(data: str | bytes) -> None:
        if isinstance(data, str) and "t" in json.loads(data):
            page.sent_times.append(json.loads(data)["t"])

    def watch(ws) -> None:
        ws.on("framereceived", lambda data: record(json.loads(data)))
        ws.on("framesent", sent)

    page.on("websocket", watch)
    page.goto(live_gateway + "/")
    page.get_by_test_id("tab-live").click()
    expect(page.get_by_test_id("live-camera")).to_be_visible()
    yield page
    assert context.outside == []
    context.close()


def overlay_label(tracks: list[dict]) -> str:
    """What live.js writes on each face box (and into the canvas's aria-label)."""
    return "; ".join(f"Face {t['id']}: {t['smoothed']:.2f} {t['verdict']}" for t in tracks)


OVERLAY_STATE = """() => {
  const c = document.getElementById('live-overlay');
  const px = c.width ? c.getContext('2d').getImageData(0, 0, c.width, c.height).data : [];
  let drawn = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i]) drawn++;
  return { label: c.getAttribute('aria-label'), drawn, width: c.width, height: c.height };
}"""


def wait_for_scored_overlay(page, timeout_ms: int = 30_000) -> dict:
    page.wait_for_function(
        "() => document.getElementById('live-overlay').getAttribute('aria-label').startsWith('Face ')",
        timeout=timeout_ms,
    )
    return page.evaluate(OVERLAY_STATE)


def test_camera_stream_shows_scores_on_the_face_stats_and_the_summary(live_page, screenshots):
    page = live_page
    page.get_by_test_id("api-key").fill(KEY)
    started = time.monotonic()
    page.get_by_test_id("live-camera").click()
    expect(page.get_by_test_id("live-stop")).to_be_enabled()
    overlay = wait_for_scored_overlay(page)
    first_scored_s = time.monotonic() - started
    results = [m for m in page.received if m["type"] == "result"]
    assert results, page.received
    # The overlay shows a score the server sent, drawn on a canvas the size of the camera's frames.
    assert overlay["label"] in {overlay_label(r["tracks"]) for r in results if r["tracks"]}, overlay
    assert (overlay["width"], overlay["height"]) == (WIDTH, HEIGHT)
    assert overlay["drawn"] > 0
    # The boxes are in the sent frame's pixels: the synthetic face pans at mid-height, FACE_PX wide.
    box = next(r for r in reversed(results) if r["tracks"])["tracks"][0]["box"]
    assert abs((box[1] + box[3]) / 2 - HEIGHT / 2) < 40, box
    assert 0.5 * FACE_PX < box[2] - box[0] < 2 * FACE_PX, box

    # Each result's time is one the page sent with a frame (so the page can time its round trip).
    assert {r["t"] for r in results} <= set(page.sent_times), (results, page.sent_times)
    expect(page.get_by_test_id("live-latency")).to_contain_text("ms in the analysis")
    expect(page.get_by_test_id("live-latency")).to_contain_text("from this page and back")
    expect(page.get_by_test_id("live-dropped")).to_contain_text("received frames")
    assert int(page.get_by_test_id("live-results").inner_text()) >= 1
    expect(page.get_by_test_id("live-face").first).to_contain_text("so far, smoothed score")
    page.screenshot(path=str(screenshots / "live-camera.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(screenshots / "live-phone.png"), full_page=True)

    page.get_by_test_id("live-stop").click()
    expect(page.get_by_test_id("live-final")).to_contain_text("Whole stream:", timeout=30_000)
    expect(page.get_by_test_id("live-status")).to_contain_text("Stream ended")
    final = page.received[-1]
    assert final["type"] == "final" and final["tracks"], final
    mean = final["tracks"][0]["score"]
    expect(page.get_by_test_id("live-face").first).to_contain_text(f"mean score {mean:.2f}")
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert page.evaluate("document.getElementById('live-video').srcObject.getTracks()"
                         ".every(t => t.readyState === 'ended')")  # fmt: skip  # the camera is off
    # Frames go out at a bounded rate (the camera's 25 fps here, at most 30).
    sent = int(page.locator("#live-sent").inner_text())
    assert 0 < sent <= 30 * (time.monotonic() - started), sent
    print(f"first scored overlay after {first_scored_s:.1f} s; {sent} frames sent, {len(results)} results")


def test_a_file_streams_at_its_own_pace_with_its_own_times(live_page, tmp_path):
    page = live_page
    video = synth.write_face_video(tmp_path / "face.mp4", n_frames=75, motion="pan")  # 3 s
    page.get_by_test_id("api-key").fill(KEY)
    started = time.monotonic()
    page.get_by_test_id("live-file").set_input_files(str(video.path))
    wait_for_scored_overlay(page)
    # The file's end ends the stream: the summary comes without pressing Stop.
    expect(page.get_by_test_id("live-final")).to_contain_text("Whole stream:", timeout=30_000)
    assert time.monotonic() - started >= 2.5  # played at its pace, not as fast as it decodes
    results = [m for m in page.received if m["type"] == "result"]
    assert results and all(0 <= r["t"] <= 3.0 for r in results), [r["t"] for r in results]
    assert [r["t"] for r in results] == sorted(r["t"] for r in results)
    assert page.received[-1]["type"] == "final"


def test_refusals_are_explained(live_page, live_gateway):
    page = live_page
    error = page.get_by_test_id("error")
    page.get_by_test_id("api-key").fill("not-the-key")
    page.get_by_test_id("live-camera").click()
    expect(error).to_contain_text("The API key was refused", timeout=20_000)
    # the detail: the stream's refusal or the job list's (refreshed when the key field changed), whichever
    # came last; both name the server's code
    expect(error).to_contain_text("(unauthorized: ")
    expect(page.get_by_test_id("live-camera")).to_be_enabled()  # ready to try again
    expect(page.get_by_test_id("live-stop")).to_be_disabled()
    assert page.evaluate("document.getElementById('live-video').srcObject.getTracks()"
                         ".every(t => t.readyState === 'ended')")  # fmt: skip
    # This key's one allowed stream is open elsewhere: the page says so (4429).
    url = live_gateway.replace("http://", "ws://") + "/v1/streams"
    with connect(url, additional_headers={"X-API-Key": KEY}, open_timeout=10):
        page.get_by_test_id("api-key").fill(KEY)
        page.get_by_test_id("live-camera").click()
        expect(error).to_contain_text("Too many live streams are open for this API key", timeout=20_000)
        expect(error).to_contain_text("too_many_streams")
        expect(error).not_to_contain_text("API key was refused")  # replaced, not stacked


def test_leaving_the_tab_ends_the_stream_with_its_summary(live_page):
    page = live_page
    page.get_by_test_id("api-key").fill(KEY)
    page.get_by_test_id("live-camera").click()
    wait_for_scored_overlay(page)
    page.get_by_test_id("tab-live").focus()
    page.keyboard.press("ArrowLeft")  # the tabs follow the arrow keys
    expect(page.get_by_test_id("analyse")).to_be_visible()
    expect(page.get_by_test_id("live-camera")).to_be_hidden()
    ended = "() => document.getElementById('live-status').textContent.includes('Stream ended')"
    page.wait_for_function(ended, timeout=30_000)
    assert page.received[-1]["type"] == "final"
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("live-final")).to_contain_text("Whole stream:")
    expect(page.get_by_test_id("live-camera")).to_be_enabled()
    expect(page.get_by_test_id("error")).to_be_hidden()
