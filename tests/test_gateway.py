"""The gateway through its HTTP interface: auth, rate limit, upload validation, sync detections, jobs.

The preprocessor behind it is the real preprocessor app (in-process, ONNX Runtime backend) reached through
httpx's ASGI transport, so every byte goes through both services' real code; tests/integration does the
same with real processes and Triton.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from deepfake.contracts.errors import ServiceError
from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings
from tests import synth

KEY = "test-key-1"


def make_gateway(
    tmp_path: Path,
    model_path: Path,
    preprocessor_max_duration_s: float = 600,
    preprocessor_token: str = "",
    backend_factory=None,
    **overrides,
) -> TestClient:
    preprocessor = create_preprocessor_app(
        ServiceSettings(
            upload_dir=tmp_path / "pp_uploads",
            max_duration_s=preprocessor_max_duration_s,
            service_token=preprocessor_token,
        ),
        backend_factory=backend_factory or (lambda: OnnxBackend(model_path, threads=1)),
    )
    values = {
        "api_keys": f"{KEY},other-key",
        "job_store_url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "upload_dir": tmp_path / "uploads",
        "evidence_dir": tmp_path / "evidence",
        "rate_limit_per_minute": 1000,
        "job_poll_s": 0.1,
    }
    settings = GatewaySettings(**{**values, **overrides})
    return TestClient(create_app(settings, preprocessor_transport=httpx.ASGITransport(app=preprocessor)))


@pytest.fixture()
def gateway(tmp_path, random_model_path, default_detector):
    with make_gateway(tmp_path, random_model_path) as client:
        client.headers["X-API-Key"] = KEY
        yield client


def post_video(client: TestClient, url: str, path: Path, data: dict | None = None, **headers: str):
    with path.open("rb") as handle:
        return client.post(url, files={"file": (path.name, handle, "video/mp4")}, data=data, headers=headers)


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("succeeded", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job not finished: {status}")


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_no_key_or_a_wrong_key_is_401(gateway, synth_videos):
    no_key = post_video(gateway, "/v1/detections", synth_videos["pan"].path, **{"X-API-Key": ""})
    assert_error_shape(no_key, 401, "unauthorized")
    assert_error_shape(gateway.get("/v1/jobs/x", headers={"X-API-Key": "nope"}), 401, "unauthorized")
    assert gateway.get("/healthz").status_code == 200  # health, docs and the web page need no key
    assert gateway.get("/docs").status_code == 200
    page = gateway.get("/")
    assert page.status_code == 200 and 'data-testid="file-input"' in page.text
    assert "/static/app.js" in page.text and "/v1/jobs" in gateway.get("/static/app.js").text


def test_a_405_allows_every_method_of_its_path(gateway):
    # Starlette names only the first matching route's methods (`Allow: POST` for /v1/jobs; schemathesis).
    for method, path, allowed in [
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("OPTIONS", "/v1/jobs/abc", "DELETE, GET"),
        ("PUT", "/v1/jobs/abc/evidence/x.jpg", "GET"),
    ]:
        response = gateway.request(method, path)
        assert_error_shape(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed, (method, path)


def test_auth_disabled_explicitly_lets_requests_through(tmp_path, random_model_path):
    with make_gateway(tmp_path, random_model_path, auth_disabled=True) as client:
        assert_error_shape(client.get("/v1/jobs/unknown"), 404, "job_not_found")


def test_cors_allows_only_the_configured_origins(tmp_path, random_model_path):
    with make_gateway(tmp_path, random_model_path, cors_origins="https://app.example") as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
        allowed = client.options("/v1/jobs", headers={"Origin": "https://app.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.options("/v1/jobs", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers


def test_rate_limit_per_key_gives_429_with_retry_after(tmp_path, random_model_path):
    with make_gateway(tmp_path, random_model_path, rate_limit_per_minute=2) as client:
        for _ in range(2):
            assert client.get("/v1/jobs/x", headers={"X-API-Key": KEY}).status_code == 404
        limited = client.get("/v1/jobs/x", headers={"X-API-Key": KEY})
        assert_error_shape(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # Another key has its own budget.
        assert client.get("/v1/jobs/x", headers={"X-API-Key": "other-key"}).status_code == 404


def test_bad_uploads_get_4xx_and_leave_no_file(gateway, tmp_path, synth_videos, bad_inputs):
    assert_error_shape(post_video(gateway, "/v1/detections", bad_inputs["not_a_video"]), 415, "not_a_video")
    assert_error_shape(post_video(gateway, "/v1/detections", bad_inputs["jpeg"]), 415, "not_a_video")
    assert_error_shape(post_video(gateway, "/v1/detections", bad_inputs["empty_file"]), 400, "empty_file")
    assert_error_shape(
        post_video(gateway, "/v1/detections", bad_inputs["corrupt_video"]), 422, "corrupt_video"
    )
    assert_error_shape(post_video(gateway, "/v1/jobs", bad_inputs["no_video_stream"]), 415, "no_video_stream")
    assert_error_shape(gateway.post("/v1/detections", content=b"raw"), 400, "bad_request")
    wrong_field = gateway.post("/v1/detections", files={"video": ("a.mp4", b"\x00\x00\x00\x18ftypmp42")})
    assert_error_shape(wrong_field, 400, "bad_request")
    assert not list(gateway.app.state.settings.upload_dir.glob("*"))


def test_size_and_duration_limits(tmp_path, random_model_path, synth_videos):
    video = synth_videos["long_gop"].path  # 250 frames at 25 fps: 10 s
    with make_gateway(tmp_path, random_model_path, max_upload_bytes=10_000, sync_max_duration_s=5) as client:
        client.headers["X-API-Key"] = KEY
        error = assert_error_shape(post_video(client, "/v1/detections", video), 413, "too_large")
        assert error["details"]["max_bytes"] == 10_000
    with make_gateway(tmp_path, random_model_path, sync_max_duration_s=5, max_duration_s=8) as client:
        client.headers["X-API-Key"] = KEY
        error = assert_error_shape(post_video(client, "/v1/detections", video), 413, "too_long")
        assert "/v1/jobs" in error["message"]
        assert_error_shape(post_video(client, "/v1/jobs", video), 413, "too_long")


def faststart_copy(src: Path, dst: Path) -> Path:
    """The same video remuxed with its index (moov) first, as streaming-friendly encoders write it."""
    import av

    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def test_an_over_long_video_with_its_index_first_is_refused_while_streaming(tmp_path):
    import asyncio

    from deepfake.uploads import receive_upload
    from gateway.video_check import early_duration_check

    # 6 s of noise: over 1 MiB (noise does not compress), written in a blink.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (144, 192, 3), dtype=np.uint8) for _ in range(150)]
    video = synth.write_video(tmp_path / "long.mp4", frames, fps=25.0)
    fast = faststart_copy(Path(video), tmp_path / "long_faststart.mp4")
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'.encode()
        + fast.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    sent = [0]

    async def chunks():
        for start in range(0, len(body), 64 * 1024):  # as uvicorn hands the body over
            sent[0] += len(body[start : start + 64 * 1024])
            yield body[start : start + 64 * 1024]

    async def receive():
        return await receive_upload(
            f"multipart/form-data; boundary={boundary}", chunks(), tmp_path / "up", 1 << 30,
            early_duration_check(5.0),
        )  # fmt: skip

    with pytest.raises(ServiceError) as refused:  # the one root: too_long is the pipeline's refusal
        asyncio.run(receive())
    assert refused.value.code == "too_long" and refused.value.http_status == 413
    assert sent[0] < len(body) / 2  # refused from the first megabyte, not after the whole upload
    assert not list((tmp_path / "up").glob("*"))


def test_sync_detection_returns_the_result(gateway, synth_videos):
    response = post_video(gateway, "/v1/detections", synth_videos["pan"].path)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["path"] == "pan.mp4" and result["verdict"] in ("fake", "real")
    assert len(result["tracks"]) == 1 and result["model"]["backend"] == "onnxruntime"


def test_job_lifecycle_and_isolation_between_keys(gateway, synth_videos):
    created = post_video(gateway, "/v1/jobs", synth_videos["pan"].path)
    assert created.status_code == 202
    assert created.headers["location"] == created.json()["status_url"]
    assert created.json()["status_url"] == f"http://testserver/v1/jobs/{created.json()['id']}"
    job_id = created.json()["id"]
    assert_error_shape(
        gateway.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": "other-key"}), 404, "job_not_found"
    )
    status = wait_for_job(gateway, job_id)
    assert status["state"] == "succeeded" and status["progress"] == 1.0 and status["attempts"] == 1
    result = gateway.get(status["result_url"])
    assert result.status_code == 200 and result.json()["path"] == "pan.mp4"
    assert [job["id"] for job in gateway.get("/v1/jobs").json()] == [job_id]
    assert gateway.get("/v1/jobs", params={"state": "queued"}).json() == []
    assert gateway.get("/v1/jobs", headers={"X-API-Key": "other-key"}).json() == []
    assert_error_shape(gateway.get("/v1/jobs", params={"state": "nonsense"}), 422, "invalid_request")
    assert gateway.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert_error_shape(gateway.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
    metrics = gateway.get("/metrics").text
    assert 'gateway_jobs_finished_total{outcome="succeeded"} 1.0' in metrics
    assert "gateway_upload_bytes_total" in metrics


def test_failed_job_keeps_the_reason(tmp_path, random_model_path, synth_videos):
    # The gateway accepts 10 s, the preprocessor behind it only 5 s: the job fails there, with its reason.
    with make_gateway(tmp_path, random_model_path, preprocessor_max_duration_s=5) as client:
        client.headers["X-API-Key"] = KEY
        created = post_video(client, "/v1/jobs", synth_videos["long_gop"].path)
        assert created.status_code == 202, created.text
        status = wait_for_job(client, created.json()["id"])
        assert status["state"] == "failed" and status["error"]["code"] == "too_long"
        error = assert_error_shape(client.get(f"/v1/jobs/{status['id']}/result"), 409, "job_failed")
        assert error["details"]["job_error"]["code"] == "too_long"


def test_readyz_follows_the_preprocessor(tmp_path, random_model_path):
    settings = GatewaySettings(
        api_keys=KEY,
        job_store_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        upload_dir=tmp_path / "uploads",
        preprocessor_url="http://127.0.0.1:9",  # discard port: nothing answers
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        error = assert_error_shape(client.get("/readyz"), 503, "not_ready")
        assert "unreachable" in error["message"]


# --- access: service token, failed-auth throttling, no internal addresses in public messages -----------

ADDRESS_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+|localhost|https?://|:\d{2,5}\b|\[[0-9a-f:]+\]", re.I)


def assert_no_internal_address(error: dict, *internal: str) -> None:
    text = json.dumps(error)
    assert not ADDRESS_LIKE.search(text), text
    for value in internal:
        assert value not in text, (value, text)


def test_the_gateway_sends_the_service_token(tmp_path, random_model_path, default_detector, synth_videos):
    video = synth_videos["pan"].path
    with make_gateway(
        tmp_path, random_model_path, preprocessor_token="svc-secret", service_token="svc-secret"
    ) as client:
        client.headers["X-API-Key"] = KEY
        assert client.get("/readyz").status_code == 200
        response = post_video(client, "/v1/detections", video)
        assert response.status_code == 200, response.text
    # A gateway with the wrong token: our misconfiguration (502, not the client's 401), and not ready.
    with make_gateway(
        tmp_path / "wrong", random_model_path, preprocessor_token="svc-secret", service_token="nope"
    ) as client:
        client.headers["X-API-Key"] = KEY
        assert_error_shape(client.get("/readyz"), 503, "not_ready")
        error = assert_error_shape(post_video(client, "/v1/detections", video), 502, "bad_gateway")
        assert "token" not in error["message"]


def test_wrong_keys_are_throttled_per_client_address(tmp_path, random_model_path):
    with make_gateway(tmp_path, random_model_path, auth_failure_limit=3, auth_failure_window_s=60) as client:
        for attempt in range(3):
            assert_error_shape(
                client.get("/v1/jobs/x", headers={"X-API-Key": f"guess-{attempt}"}), 401, "unauthorized"
            )
        throttled = client.get("/v1/jobs/x", headers={"X-API-Key": "guess-3"})
        assert_error_shape(throttled, 429, "too_many_auth_failures")
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # While throttled, even the right key gets 429 (guesses learn nothing from the answers) ...
        assert client.get("/v1/jobs/x", headers={"X-API-Key": KEY}).status_code == 429
        # ... and a missing key is still just 401 (not a guess).
        assert client.get("/v1/jobs/x", headers={"X-API-Key": ""}).status_code == 401
        # Another client address is not affected.
        other = TestClient(client.app, client=("10.9.8.7", 40000))
        assert other.get("/v1/jobs/x", headers={"X-API-Key": KEY}).status_code == 404
        assert other.get("/v1/jobs/x", headers={"X-API-Key": "guess"}).status_code == 401


def test_failed_auth_throttle_window_and_trusted_proxies():
    from starlette.requests import Request

    from gateway.auth import client_address, parse_networks
    from gateway.rate_limit import AuthFailureThrottle

    now = [1000.0]
    throttle = AuthFailureThrottle(limit=2, window_s=10, clock=lambda: now[0])
    throttle.record_failure("a")
    now[0] += 4
    throttle.record_failure("a")
    assert throttle.retry_after("a") == pytest.approx(6) and throttle.retry_after("b") == 0
    now[0] += 6.5  # the first failure left the window
    assert throttle.retry_after("a") == 0
    assert AuthFailureThrottle(limit=0, window_s=10).retry_after("a") == 0

    def request(peer: str, forwarded: str | None) -> Request:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return Request({"type": "http", "client": (peer, 1), "headers": headers})

    proxies = parse_networks("10.0.0.0/8")
    # Only a trusted proxy's X-Forwarded-For counts; the nearest untrusted hop is the client.
    assert client_address(request("10.1.1.1", "6.6.6.6, 203.0.113.5, 10.2.2.2"), proxies) == "203.0.113.5"
    assert client_address(request("198.51.100.9", "203.0.113.5"), proxies) == "198.51.100.9"
    assert client_address(request("10.1.1.1", "203.0.113.5"), ()) == "10.1.1.1"
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks("10.0.0.0/8, not-a-network")


def test_503_with_the_preprocessor_down_names_no_internal_address(tmp_path, synth_videos):
    from cli.local_stack import free_port

    port = free_port()  # nobody listens there
    settings = GatewaySettings(
        api_keys=KEY,
        job_store_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        upload_dir=tmp_path / "uploads",
        preprocessor_url=f"http://127.0.0.1:{port}",
    )
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = KEY
        response = post_video(client, "/v1/detections", synth_videos["pan"].path)
        error = assert_error_shape(response, 503, "preprocessor_unavailable")
        assert response.headers["retry-after"]
        assert_no_internal_address(error, str(port), "127.0.0.1")
        assert_no_internal_address(assert_error_shape(client.get("/readyz"), 503, "not_ready"), str(port))


def test_503_with_triton_down_names_no_internal_address(tmp_path, default_detector, synth_videos):
    from cli.local_stack import free_port
    from inference.triton_backend import TritonBackend

    url = f"127.0.0.1:{free_port()}"  # nobody listens there
    with make_gateway(
        tmp_path, Path("unused"), backend_factory=lambda: TritonBackend(url, timeout_s=2, retries=1)
    ) as client:
        client.headers["X-API-Key"] = KEY
        response = post_video(client, "/v1/detections", synth_videos["pan"].path)
        error = assert_error_shape(response, 503, "inference_unavailable")
        assert_no_internal_address(error, url, url.split(":")[1])
        assert_no_internal_address(assert_error_shape(client.get("/readyz"), 503, "not_ready"), url)
