"""Hostile videos: degenerate frame sizes, frames that would take gigabytes to decode, and streamed
files whose header states no duration. Each is refused with its own code (never internal_error) or, for
the streamed file, analysed over its real span and held to the duration limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deepfake.contracts.errors import http_status
from deepfake.settings import REPO_ROOT
from preprocessor.errors import VideoError
from preprocessor.probe import probe
from preprocessor.sampling import FrameSampler, plan_windows
from preprocessor.settings import PipelineSettings
from tests import synth

LIMITS = {"max_bytes": 10**9, "max_duration_s": 3600.0}
DEGENERATE = [(1, 1), (4, 4), (90, 8000), (8000, 90)]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    videos = {f"{w}x{h}": synth.write_tiny_video(root / f"tiny_{w}x{h}.mp4", w, h) for w, h in DEGENERATE}
    videos["huge"] = synth.write_huge_declared_mjpeg(root / "huge_16000x16000.mkv")
    videos["streamed"] = synth.write_streamed_mkv(root / "streamed_10s.mkv", n_frames=250)  # 10 s
    return videos


def deepfake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


# --- tiny and degenerate frames -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [f"{w}x{h}" for w, h in DEGENERATE])
def test_tiny_or_degenerate_frames_are_frame_too_small(hostile, size):
    with pytest.raises(VideoError) as caught:
        probe(hostile[size], **LIMITS)
    error = caught.value
    assert error.code == "frame_too_small" and error.http_status == 422 == http_status("frame_too_small")
    width, height = map(int, size.split("x"))
    assert (error.details["width"], error.details["height"]) == (width, height)
    assert size in error.message


def test_small_but_usable_frames_still_pass(tmp_path):
    info = probe(synth.write_tiny_video(tmp_path / "64x48.mp4", 64, 48), **LIMITS).info
    assert (info.width, info.height) == (64, 48)


def test_pipeline_refuses_a_1x1_video_with_a_video_error(hostile, default_detector):
    from preprocessor.pipeline import Pipeline

    pipeline = Pipeline(PipelineSettings(threads=1), None, default_detector)
    with pytest.raises(VideoError) as caught:
        pipeline.extract_faces(hostile["1x1"])
    assert caught.value.code == "frame_too_small"


@pytest.mark.parametrize("size", ["1x1", "90x8000"])
def test_cli_faces_on_degenerate_frames_is_a_clear_error(hostile, tmp_path, size, default_detector):
    run = deepfake("faces", str(hostile[size]), "--out", str(tmp_path / "out"))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(run.stdout.splitlines()[0])["error"]["code"] == "frame_too_small"
    assert "frame_too_small" in run.stderr


def test_cli_faces_out_is_an_existing_file(synth_videos, tmp_path, default_detector):
    existing = tmp_path / "taken.txt"
    existing.write_text("not a folder")
    run = deepfake("faces", str(synth_videos["pan"].path), "--out", str(existing), "--frames", "8")
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "--out" in run.stderr and "not a folder" in run.stderr
    assert existing.read_text() == "not a folder"


def test_cli_faces_out_cannot_be_created(synth_videos, tmp_path, default_detector):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run = deepfake("faces", str(synth_videos["pan"].path), "--out", str(blocker / "sub"), "--frames", "8")
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "--out" in run.stderr and "cannot create" in run.stderr


# --- frames too large to decode -------------------------------------------------------------------------


def test_default_pixel_limit_is_8k_uhd():
    assert PipelineSettings().max_frame_pixels == 7680 * 4320


def test_huge_declared_frames_are_too_large_frame(hostile):
    with pytest.raises(VideoError) as caught:
        probe(hostile["huge"], **LIMITS)
    error = caught.value
    assert error.code == "too_large_frame" and error.http_status == 413 == http_status("too_large_frame")
    assert (error.details["width"], error.details["height"]) == (16000, 16000)
    assert error.details["max_frame_pixels"] == 7680 * 4320


def test_pixel_limit_refuses_before_any_frame_is_decoded(synth_videos, monkeypatch):
    import preprocessor.probe as probe_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded before the pixel limit was checked")

    monkeypatch.setattr(probe_module, "_first_frame", no_decoding)
    with pytest.raises(VideoError) as caught:
        probe(synth_videos["pan"].path, **LIMITS, max_frame_pixels=640 * 360 - 1)
    assert caught.value.code == "too_large_frame"


def test_pipeline_applies_the_pixel_limit_setting(synth_videos, default_detector, monkeypatch):
    from preprocessor.pipeline import Pipeline

    monkeypatch.setenv("DEEPFAKE_MAX_FRAME_PIXELS", str(640 * 360 - 1))
    pipeline = Pipeline(PipelineSettings(threads=1), None, default_detector)
    with pytest.raises(VideoError) as caught:
        pipeline.extract_faces(synth_videos["pan"].path)
    assert caught.value.code == "too_large_frame"


# --- streamed files without a duration ------------------------------------------------------------------


def test_streamed_mkv_header_states_no_duration(hostile):
    """The precondition: the file really is what a live muxer writes (no Duration, no Cues)."""
    import av

    with av.open(str(hostile["streamed"])) as container:
        assert container.duration is None and container.streams.video[0].duration is None


def test_probe_measures_the_duration_a_streamed_mkv_does_not_state(hostile):
    info = probe(hostile["streamed"], **LIMITS).info
    assert info.duration_s == pytest.approx(10.0, abs=0.1)
    assert info.frame_count == 250


def test_streamed_mkv_over_the_limit_is_too_long(hostile):
    with pytest.raises(VideoError) as caught:
        probe(hostile["streamed"], max_bytes=10**9, max_duration_s=5.0)
    assert caught.value.code == "too_long" and caught.value.http_status == 413
    assert caught.value.details["max_duration_s"] == 5.0


def test_streamed_mkv_is_sampled_over_its_whole_span(hostile):
    probed = probe(hostile["streamed"], **LIMITS)
    plan = plan_windows(probed.info.duration_s, probed.info.fps, 32, 8, 2)
    sampler = FrameSampler(probed, plan, threads=1)
    frames = [frame for window in sampler.windows() for frame in window]
    times = [frame.t for frame in frames]
    assert times == sorted(times) and times[0] < 2.0 and times[-1] > 8.0
    # Each frame is the one at its time (grey level i % 200 + 20 for frame i).
    for frame in frames:
        index = round(frame.t * 25)
        assert abs(float(frame.rgb.mean()) - (index % 200 + 20)) < 4, (frame.t, frame.rgb.mean())
    assert not sampler.warnings


def test_unknown_duration_is_never_analysed_silently(synth_videos):
    probed = probe(synth_videos["pan"].path, **LIMITS)
    probed.info = probed.info.model_copy(update={"duration_s": 0.0})
    plan = plan_windows(0.0, probed.info.fps, 8, 8, 1)
    sampler = FrameSampler(probed, plan, threads=1)
    assert list(sampler.windows())
    assert any("duration" in warning and "only" in warning for warning in sampler.warnings)


# --- the services answer with the codes, not a 500 --------------------------------------------------------


@pytest.fixture()
def service_client(tmp_path, random_model_path, default_detector):
    from inference.onnx_backend import OnnxBackend
    from preprocessor.app import create_app
    from preprocessor.service_settings import ServiceSettings

    settings = ServiceSettings(upload_dir=tmp_path / "uploads", workers=1, queue_size=2, max_duration_s=5.0)
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:  # a loopback caller: no token needed
        yield client


@pytest.mark.parametrize(
    "name, status, code",
    [("1x1", 422, "frame_too_small"), ("huge", 413, "too_large_frame"), ("streamed", 413, "too_long")],
)
def test_preprocessor_service_answers_the_specific_code(service_client, hostile, name, status, code):
    path = hostile[name]
    with path.open("rb") as handle:
        response = service_client.post("/v1/analyze", files={"file": (path.name, handle, "video/mp4")})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert service_client.get("/healthz").status_code == 200
