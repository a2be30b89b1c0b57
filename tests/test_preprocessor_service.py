"""The preprocessor service through its HTTP interface (in-process app, real pipeline and model).

The backend here is the in-process ONNX Runtime one (a real backend, not a mock); Triton itself is covered
by tests/integration. Triton outages are real too: a TritonBackend pointed at a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from inference.onnx_backend import OnnxBackend
from inference.triton_backend import TritonBackend
from preprocessor.app import create_app
from preprocessor.pipeline import Pipeline
from preprocessor.service import AnalysisService, ServiceBusyError
from preprocessor.service_settings import ServiceSettings
from preprocessor.settings import PipelineSettings

LOOPBACK = ("127.0.0.1", 50000)  # TestClient's peer address: a local caller (no token configured)


@pytest.fixture()
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(upload_dir=tmp_path / "uploads", workers=1, queue_size=2)


@pytest.fixture()
def client(settings, random_model_path, default_detector):
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    with TestClient(app, client=LOOPBACK) as test_client:
        yield test_client


def post_video(client: TestClient, path: Path, **headers: str):
    with path.open("rb") as handle:
        return client.post("/v1/analyze", files={"file": (path.name, handle, "video/mp4")}, headers=headers)


def test_analyze_returns_the_pipeline_result(client, random_model_path, default_detector, synth_videos):
    video = synth_videos["pan"].path
    response = post_video(client, video)
    assert response.status_code == 200, response.text
    got = response.json()
    pipeline = Pipeline(
        PipelineSettings(threads=1), OnnxBackend(random_model_path, threads=1), default_detector
    )
    want = pipeline.analyze(video).model_dump(mode="json")
    assert got["path"] == video.name
    assert got["verdict"] == want["verdict"] and got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert [t["clip_scores"] for t in got["tracks"]] == [t["clip_scores"] for t in want["tracks"]]
    # The upload is deleted once analysed.
    assert not list((client.app.state.settings.upload_dir).glob("*"))


def test_ndjson_stream_reports_rising_progress_then_the_result(client, synth_videos):
    response = post_video(client, synth_videos["pan"].path, accept="application/x-ndjson")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    progress = [line["progress"] for line in lines[:-1]]
    assert progress and progress == sorted(progress) and 0 < progress[-1] <= 1
    assert lines[-1]["result"]["verdict"] in ("fake", "real")


def test_bad_videos_get_the_pipeline_error_codes(client, bad_inputs):
    for code in ("not_a_video", "empty_file", "corrupt_video", "no_video_stream"):
        response = post_video(client, bad_inputs[code])
        assert response.status_code in (400, 413, 415, 422), response.text
        assert response.json()["error"]["code"] == code


def test_upload_over_the_limit_is_refused_while_streaming(settings, random_model_path, synth_videos):
    settings.max_bytes = 1000
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    with TestClient(app, client=LOOPBACK) as client:
        response = post_video(client, synth_videos["pan"].path)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not list(settings.upload_dir.glob("*"))


def test_triton_outage_is_503_not_a_hang(settings, synth_videos, default_detector):
    from cli.local_stack import free_port

    url = f"127.0.0.1:{free_port()}"  # nobody listens there
    app = create_app(settings, backend_factory=lambda: TritonBackend(url, timeout_s=2, retries=1))
    with TestClient(app, client=LOOPBACK) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "unavailable" in ready.json()["error"]["message"]
        response = post_video(client, synth_videos["pan"].path)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "inference_unavailable"
        assert url not in response.text and url.split(":")[1] not in response.text  # no internal address
        assert response.headers["retry-after"]
        metrics = client.get("/metrics").text
        assert 'preprocessor_analyses_total{outcome="inference_unavailable"} 1.0' in metrics


def test_admission_is_bounded_by_workers_plus_queue(
    random_model_path, default_detector, synth_videos, tmp_path
):
    service = AnalysisService(
        ServiceSettings(workers=1, queue_size=0, upload_dir=tmp_path),
        backend_factory=lambda: OnnxBackend(random_model_path, threads=1),
    )

    async def two_at_once():
        video = synth_videos["zoom"].path
        return await asyncio.gather(
            service.run_analysis(video), service.run_analysis(video), return_exceptions=True
        )

    try:
        outcomes = asyncio.run(two_at_once())
    finally:
        service.close()
    assert sum(isinstance(o, ServiceBusyError) for o in outcomes) == 1
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1


def test_an_unknown_detector_refuses_to_start(tmp_path):
    with pytest.raises(ValueError, match="DEEPFAKE_DETECTOR='nope'"):
        create_app(ServiceSettings(detector="nope", upload_dir=tmp_path))


# --- access: the service token (preprocessor.auth) ---------------------------------------------------

TOKEN = "svc-token-for-tests"
PROTECTED = ["/metrics", "/docs", "/openapi.json", "/no-such-path"]


def test_with_a_token_every_endpoint_but_the_probes_requires_it(
    settings, random_model_path, default_detector, synth_videos
):
    settings.service_token = SecretStr(TOKEN)
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    # Any peer, loopback or not: with a token configured only the token counts.
    with TestClient(app, client=("10.1.2.3", 40000)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Service-Token": "wrong"}):
            refused = post_video(client, synth_videos["pan"].path, **headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            for path in PROTECTED:
                assert client.get(path, headers=headers).status_code == 401, (path, headers)
        assert not list(settings.upload_dir.glob("*"))  # refused before a byte was spooled
        # A wrong token fails the probe too (the gateway's readiness sends its token).
        assert client.get("/readyz", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = post_video(client, synth_videos["pan"].path, Authorization=f"Bearer {TOKEN}")
        assert ok.status_code == 200, ok.text
        assert client.get("/metrics", headers={"X-Service-Token": TOKEN}).status_code == 200
        assert client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize(("peer", "served"), [("127.0.0.1", True), ("::1", True), ("10.0.0.7", False)])
def test_without_a_token_only_loopback_callers_are_served(settings, random_model_path, peer, served):
    assert settings.token() is None
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    with TestClient(app, client=(peer, 40000)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")
        if served:
            assert response.status_code == 200
        else:
            assert response.status_code == 401
            assert "DEEPFAKE_SERVICE_TOKEN" in response.json()["error"]["message"]
            assert client.get("/openapi.json").status_code == 401


# --- settings: one object, the pipeline's names, one max-duration default ------------------------------


def _clear_deepfake_env(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("DEEPFAKE_"):
            monkeypatch.delenv(name)


def test_the_service_reads_the_pipeline_settings_from_the_environment(
    monkeypatch, tmp_path, random_model_path, default_detector, synth_videos
):
    _clear_deepfake_env(monkeypatch)
    monkeypatch.setenv("DEEPFAKE_THREADS", "3")
    monkeypatch.setenv("DEEPFAKE_MAX_BYTES", "1000")
    monkeypatch.setenv("DEEPFAKE_MAX_DURATION_S", "7.5")
    monkeypatch.setenv("DEEPFAKE_FRAMES", "8")
    monkeypatch.setenv("DEEPFAKE_UPLOAD_DIR", str(tmp_path / "uploads"))
    app = create_app(backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    effective = app.state.service.pipeline_settings
    assert (effective.threads, effective.max_bytes, effective.max_duration_s, effective.frames) == (
        3,
        1000,
        7.5,
        8,
    )
    with TestClient(app, client=LOOPBACK) as client:
        response = post_video(client, synth_videos["pan"].path)  # ~10 KB: over DEEPFAKE_MAX_BYTES
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_the_old_service_names_are_not_read(monkeypatch):
    """DEEPFAKE_MAX_UPLOAD_BYTES is the gateway's upload limit: one environment must not give it a second
    meaning in the preprocessor (it used to be an alias of MAX_BYTES there)."""
    _clear_deepfake_env(monkeypatch)
    monkeypatch.setenv("DEEPFAKE_THREADS_PER_WORKER", "4")
    monkeypatch.setenv("DEEPFAKE_MAX_UPLOAD_BYTES", "5000")
    assert (ServiceSettings().threads, ServiceSettings().max_bytes) == (
        PipelineSettings().threads,
        PipelineSettings().max_bytes,
    )


def test_one_max_duration_default_for_the_cli_and_both_services(monkeypatch):
    from deepfake.settings import DEFAULT_MAX_DURATION_S
    from gateway.settings import GatewaySettings

    _clear_deepfake_env(monkeypatch)
    defaults = {
        PipelineSettings().max_duration_s,
        ServiceSettings().max_duration_s,
        GatewaySettings().max_duration_s,
    }
    assert defaults == {DEFAULT_MAX_DURATION_S} == {600.0}
