"""The stack started for real: gateway -> preprocessor -> tritonserver, on free loopback ports.

Tests run in file order on one shared stack; the last one stops Triton on purpose (and restarts it).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cli.local_stack import LocalStack
from deepfake.processes import descendants
from tests import synth
from tests.integration.conftest import MODEL_NAME, SYNC_MODEL_NAME, cli_result

pytestmark = pytest.mark.integration
TOL = 1e-4


def assert_same_result(service: dict, cli: dict) -> None:
    """The service's answer is the in-process CLI's answer: same verdict, scores within TOL."""
    assert service["verdict"] == cli["verdict"]
    if cli["score"] is None:
        assert service["score"] is None
    else:
        assert service["score"] == pytest.approx(cli["score"], abs=TOL)
    assert len(service["tracks"]) == len(cli["tracks"]) > 0
    for got, want in zip(service["tracks"], cli["tracks"], strict=True):
        assert got["verdict"] == want["verdict"]
        assert got["score"] == pytest.approx(want["score"], abs=TOL)
        assert got["clip_scores"] == pytest.approx(want["clip_scores"], abs=TOL)
        assert [f["frame_index"] for f in got["frames"]] == [f["frame_index"] for f in want["frames"]]
        for fg, fw in zip(got["frames"], want["frames"], strict=True):
            assert fg["box"] == pytest.approx(fw["box"], abs=1e-3)
            if fw["score"] is not None:
                assert fg["score"] == pytest.approx(fw["score"], abs=TOL)
    assert [p["t"] for p in service["timeline"]] == [p["t"] for p in cli["timeline"]]
    for pg, pw in zip(service["timeline"], cli["timeline"], strict=True):
        assert (pg["score"] is None) == (pw["score"] is None)
        if pw["score"] is not None:
            assert pg["score"] == pytest.approx(pw["score"], abs=TOL)
    assert service["model"]["sha256"] == cli["model"]["sha256"]
    assert service["model"]["backend"] == "triton" and cli["model"]["backend"] == "onnxruntime"
    # Both signals: the audio-visual one per track and the video's signals, from the same sync model.
    assert service["sync_model"]["sha256"] == cli["sync_model"]["sha256"]
    assert service["sync_model"]["backend"] == "triton" and cli["sync_model"]["backend"] == "onnxruntime"
    assert_same_signals(service["signals"], cli["signals"])
    assert service["threshold"] == cli["threshold"]
    for got, want in zip(service["tracks"], cli["tracks"], strict=True):
        assert got["threshold"] == want["threshold"]
        assert_same_signals(got["signals"], want["signals"])
        assert {k: v for k, v in got["audio_visual"].items() if k != "score"} == {
            k: v for k, v in want["audio_visual"].items() if k != "score"
        }
        assert_same_signals(got["audio_visual"], want["audio_visual"], keys=("score",))


def assert_same_signals(got: dict, want: dict, keys: tuple[str, ...] = ("visual", "audio_visual")) -> None:
    for key in keys:
        assert (got[key] is None) == (want[key] is None), (key, got, want)
        if want[key] is not None:
            assert got[key] == pytest.approx(want[key], abs=TOL), key


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 120) -> tuple[dict, list[float]]:
    """Poll until the job is finished; returns the final status and the progress values seen."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(status["progress"])
        if status["state"] in ("succeeded", "failed"):
            return status, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s: {status}")


def model_file(stack: LocalStack) -> Path:
    return stack.repository / MODEL_NAME / "1" / "model.onnx"


def sync_model_file(stack: LocalStack) -> Path:
    return stack.repository / SYNC_MODEL_NAME / "1" / "model.onnx"


def upload(client: httpx.Client, url: str, path: Path, **data: str) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post(url, files={"file": (path.name, handle, "video/mp4")}, data=data or None)


def test_every_service_is_ready_and_exposes_metrics(stack: LocalStack) -> None:
    assert httpx.get(stack.ready_urls["triton"]).status_code == 200
    assert httpx.get(f"{stack.urls['preprocessor']}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{stack.urls['gateway']}/readyz").json() == {"status": "ready"}
    assert "gateway_http_requests_total" in httpx.get(f"{stack.urls['gateway']}/metrics").text
    assert "preprocessor_analyses" in httpx.get(f"{stack.urls['preprocessor']}/metrics").text
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports.triton_metrics}/metrics").text
    assert f'nv_inference_request_success{{model="{MODEL_NAME}"' in metrics
    assert f'nv_inference_request_success{{model="{SYNC_MODEL_NAME}"' in metrics  # the launcher serves both


def test_triton_batches_concurrent_requests_of_mixed_shapes_correctly(stack: LocalStack) -> None:
    """Dynamic batching merges requests; the Python-backend model must split the outputs right."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from inference.onnx_backend import OnnxBackend
    from inference.triton_backend import TritonBackend

    triton = TritonBackend(f"127.0.0.1:{stack.ports.triton_grpc}", timeout_s=30)
    local = OnnxBackend(model_file(stack), threads=1)
    size = triton.meta.crop.size
    rng = np.random.default_rng(0)
    batches = [
        rng.integers(0, 256, (int(rng.integers(1, 12)), t, size, size, 3), dtype=np.uint8)
        for t in (8, 8, 4, 8, 1, 8, 4, 8)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(triton.infer, batches))
    for clips, got in zip(batches, outputs, strict=True):
        want = local.infer(clips)
        np.testing.assert_allclose(got.clip_logits, want.clip_logits, atol=1e-5)
        np.testing.assert_allclose(got.frame_logits, want.frame_logits, atol=1e-5)
    assert triton.max_batch_size == 8  # batches above it were split by the client
    triton.close()


def test_triton_serves_the_sync_model_as_onnx_runtime_runs_it(stack: LocalStack) -> None:
    """The second model on the same server: concurrent requests of mixed N and K (dynamic batching merges
    equal shapes, the Python-backend model splits them back) give the in-process session's logits."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from inference.sync_backend import OnnxSyncModel
    from inference.triton_backend import TritonSyncModel

    triton = TritonSyncModel(f"127.0.0.1:{stack.ports.triton_grpc}", timeout_s=30)
    local = OnnxSyncModel(sync_model_file(stack), threads=1)
    assert triton.meta == local.meta and triton.info.sha256 == local.info.sha256
    rng = np.random.default_rng(0)
    t = triton.meta.clip_len  # fixed in the graph; N and K vary
    batches = [
        (
            rng.integers(0, 256, (n, t, 48, 96), dtype=np.uint8),
            rng.standard_normal((n, k, 80, 64)).astype(np.float32),
        )
        for n, k in [(1, 3), (12, 3), (3, 5), (2, 51), (5, 3)]
    ]
    with ThreadPoolExecutor(max_workers=5) as pool:
        outputs = list(pool.map(lambda b: triton.sync_logits(*b), batches))
    for (mouth, mel), got in zip(batches, outputs, strict=True):
        np.testing.assert_allclose(got, local.sync_logits(mouth, mel), atol=1e-5)
    assert triton.is_ready()
    triton.close()


def test_a_triton_without_the_sync_model_turns_the_signal_off_unless_it_is_required(
    stack: LocalStack,
) -> None:
    from inference.triton_backend import TritonModelNotServedError, TritonUnavailableError
    from preprocessor.service import triton_sync_factory
    from preprocessor.service_settings import ServiceSettings

    url = f"127.0.0.1:{stack.ports.triton_grpc}"
    absent = {"triton_url": url, "sync_model_name": "no_such_model", "triton_retries": 0}
    assert triton_sync_factory(ServiceSettings(**absent))() is None  # default: off
    with pytest.raises(TritonModelNotServedError):
        triton_sync_factory(ServiceSettings(**absent, audio_visual=True))()
    assert triton_sync_factory(ServiceSettings(triton_url=url, audio_visual=False))() is None
    served = triton_sync_factory(ServiceSettings(triton_url=url))()
    assert served is not None and served.info.backend == "triton"
    served.close()
    # Triton unreachable is an outage, never "the model is absent": no silent visual-only verdicts.
    down = ServiceSettings(triton_url="127.0.0.1:1", triton_retries=0, triton_timeout_s=2)
    with pytest.raises(TritonUnavailableError) as caught:
        triton_sync_factory(down)()
    assert not isinstance(caught.value, TritonModelNotServedError)


@pytest.mark.parametrize("name", ["face", "two"])
def test_sync_detection_equals_the_in_process_cli(stack, gateway, stack_videos, name) -> None:
    response = upload(gateway, "/v1/detections", stack_videos[name])
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["path"] == stack_videos[name].name  # the upload's name, never a server path
    if name == "face":  # speech: both signals, reported; the score stays visual (fusion is off by default)
        assert {t["audio_visual"]["reason"] for t in result["tracks"]} == {"scored"}
        assert result["signals"]["audio_visual"] is not None
        assert result["score"] == result["signals"]["visual"]
    if name == "two":  # no audio stream: no audio-visual evidence, the score is the visual one
        assert result["signals"]["audio_visual"] is None
        assert result["score"] == result["signals"]["visual"]
        assert {t["audio_visual"]["reason"] for t in result["tracks"]} == {"no_audio"}
    assert_same_result(result, cli_result(stack_videos[name], model_file(stack), sync_model_file(stack)))


def test_job_equals_the_in_process_cli_and_reports_progress(stack, gateway, stack_videos) -> None:
    response = upload(gateway, "/v1/jobs", stack_videos["face"])
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == job["status_url"] == f"{stack.urls['gateway']}/v1/jobs/{job['id']}"
    status, seen = wait_for_job(gateway, job["id"])
    assert status["state"] == "succeeded", status
    assert status["progress"] == 1.0 and seen == sorted(seen)
    result = gateway.get(job["result_url"])
    assert result.status_code == 200
    assert_same_result(
        result.json(), cli_result(stack_videos["face"], model_file(stack), sync_model_file(stack))
    )


def test_bad_uploads_get_their_4xx_in_the_one_error_shape(stack, gateway, tmp_path, stack_videos) -> None:
    cases = {
        "not_a_video": (synth.write_random_bytes(tmp_path / "random.mp4"), 415),
        "jpeg": (synth.write_jpeg_named_mp4(tmp_path / "photo.mp4"), 415),
        "empty_file": (synth.write_empty_file(tmp_path / "empty.mp4"), 400),
        "corrupt_video": (synth.write_truncated_copy(stack_videos["face"], tmp_path / "cut.mp4", 0.3), 422),
        "no_video_stream": (synth.write_audio_only(tmp_path / "audio.mp4"), 415),
    }
    for name, (path, status) in cases.items():
        response = upload(gateway, "/v1/detections", path)
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
        assert body["error"]["message"]
    assert httpx.post(f"{stack.urls['gateway']}/v1/detections").status_code == 401
    not_multipart = gateway.post(
        "/v1/detections", content=b"\x00" * 10, headers={"Content-Type": "video/mp4"}
    )
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["code"] == "bad_request"
    # Nothing is left behind in the upload directory by refused uploads.
    assert not list((stack.run_dir / "uploads").glob("*.upload"))


@pytest.mark.realdata
def test_a_real_video_through_the_stack_equals_the_cli(stack, gateway, data_dir) -> None:
    videos = sorted((data_dir / "videos").rglob("*.mp4"), key=lambda p: p.stat().st_size)
    if not videos:
        pytest.skip(f"no .mp4 under {data_dir / 'videos'}")
    video = videos[len(videos) // 4]  # a small but not degenerate one; the smallest are face crops
    response = upload(gateway, "/v1/jobs", video)
    assert response.status_code == 202, response.text
    status, _ = wait_for_job(gateway, response.json()["id"], timeout_s=300)
    assert status["state"] == "succeeded", status
    service = gateway.get(response.json()["result_url"]).json()
    cli = cli_result(video, model_file(stack), sync_model_file(stack))
    if not cli["tracks"]:
        assert service["verdict"] == cli["verdict"] == "inconclusive"
        return
    assert_same_result(service, cli)


def test_a_live_stream_through_the_stack_equals_the_in_process_session(stack, default_detector) -> None:
    """JPEG frames over the gateway's WebSocket -> preprocessor -> Triton give the results an in-process
    StreamSession gives on the same decoded frames (sent slower than they are analysed: nothing dropped)."""
    import json

    import cv2
    from websockets.sync.client import connect

    from inference.onnx_backend import OnnxBackend
    from preprocessor.images import decode_image
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings
    from preprocessor.stream import StreamSession

    frames, _ = synth.face_frames(40, motion="pan")
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in frames]
    url = stack.urls["gateway"].replace("http://", "ws://") + "/v1/streams"
    with connect(url, additional_headers={"X-API-Key": stack.api_key}) as ws:
        for i, data in enumerate(jpegs):
            ws.send(json.dumps({"t": i / 25}))
            ws.send(data)
            time.sleep(0.08)
        ws.send(json.dumps({"type": "end"}))
        messages = [json.loads(m) for m in ws]
    remote, final = messages[:-1], messages[-1]
    assert final["type"] == "final" and final["frames_dropped"] == 0 and final["model"]["backend"] == "triton"

    local: list = []
    pipeline = Pipeline(PipelineSettings(), OnnxBackend(model_file(stack), threads=1), default_detector)
    session = StreamSession(pipeline, on_result=local.append)
    for i, data in enumerate(jpegs):
        rgb = decode_image(data, 10**8, 32) if session.needs_pixels(True) else None
        session.push(rgb, i / 25, block=True)
    summary = session.finish(timeout_s=120)
    assert [r["t"] for r in remote] == [r.t for r in local]
    for got, want in zip(remote, local, strict=True):
        assert [t["id"] for t in got["tracks"]] == [t.id for t in want.tracks]
        for gt, wt in zip(got["tracks"], want.tracks, strict=True):
            assert gt["score"] == pytest.approx(wt.score, abs=TOL)
            assert gt["smoothed"] == pytest.approx(wt.smoothed, abs=TOL)
    assert [t["score"] for t in final["tracks"]] == pytest.approx([t.score for t in summary.tracks], abs=TOL)


def test_gateway_restart_keeps_finished_and_queued_jobs(stack, gateway, stack_videos) -> None:
    finished = upload(gateway, "/v1/jobs", stack_videos["face"]).json()
    assert wait_for_job(gateway, finished["id"])[0]["state"] == "succeeded"
    expected = gateway.get(finished["result_url"]).json()

    # A gateway with no job workers only accepts: its jobs stay queued while it is stopped.
    stack.stop("gateway")
    stack.start("gateway", {"DEEPFAKE_JOB_WORKERS": "0"})
    stack.wait_ready("gateway")
    queued = [upload(gateway, "/v1/jobs", stack_videos["two"]).json() for _ in range(2)]
    assert all(gateway.get(job["status_url"]).json()["state"] == "queued" for job in queued)
    stack.stop("gateway")

    stack.start("gateway")
    stack.wait_ready("gateway")
    assert gateway.get(finished["result_url"]).json() == expected
    for job in queued:
        status, _ = wait_for_job(gateway, job["id"])
        assert status["state"] == "succeeded", status
    assert gateway.delete(f"/v1/jobs/{finished['id']}").status_code == 204
    assert gateway.get(finished["status_url"]).status_code == 404


def test_a_gateway_crash_mid_job_requeues_the_job(stack, gateway, stack_videos) -> None:
    job = upload(gateway, "/v1/jobs", stack_videos["two"]).json()
    deadline = time.monotonic() + 30
    while gateway.get(job["status_url"]).json()["state"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    if gateway.get(job["status_url"]).json()["state"] != "running":
        pytest.skip("the job finished before the crash could be timed (machine too fast to catch it running)")
    stack.kill("gateway")  # no shutdown handler runs: the row stays 'running'
    stack.start("gateway")
    stack.wait_ready("gateway")
    status, _ = wait_for_job(gateway, job["id"])
    if status["state"] == "succeeded" and status["attempts"] == 1:
        pytest.skip("the job's result was recorded between the last poll and the kill (a loaded machine)")
    assert status["state"] == "succeeded" and status["attempts"] == 2, status


def test_a_triton_crash_mid_job_is_ridden_out_and_triton_starts_again(stack, gateway, stack_videos) -> None:
    job = upload(gateway, "/v1/jobs", stack_videos["face"]).json()
    server = descendants(stack.processes["triton"].pid)  # tritonserver runs in a session of its own
    assert server, "no tritonserver below its launcher"
    stack.kill("triton")
    deadline = time.monotonic() + 10  # the real server dies too, not only its launcher (it held the ports)
    while any(Path(f"/proc/{pid}").exists() for pid in server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in server if Path(f"/proc/{pid}").exists()]
    stack.start("triton")  # was: "Text file busy" copying the Python-backend stub a killed server held
    stack.wait_ready("triton")
    assert stack.processes["triton"].poll() is None
    status, _ = wait_for_job(gateway, job["id"])
    assert status["state"] == "succeeded", status
    assert upload(gateway, "/v1/detections", stack_videos["face"]).status_code == 200


def wait_until_retrying(client: httpx.Client, job_id: str, code: str, attempts: int = 2) -> dict:
    """Poll until the job is queued again, waiting out `code`, after at least `attempts` tries."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        assert status["state"] not in ("succeeded", "failed"), status
        reason = status.get("retry_reason") or {}
        if status["state"] == "queued" and reason.get("code") == code and status["attempts"] >= attempts:
            assert status["next_attempt_at"], status
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never waited to retry {code}: {status}")


def test_a_preprocessor_outage_delays_jobs_instead_of_failing_them(stack, gateway, stack_videos) -> None:
    stack.stop("preprocessor")
    try:
        job = upload(gateway, "/v1/jobs", stack_videos["face"]).json()
        wait_until_retrying(gateway, job["id"], "preprocessor_unavailable")
    finally:
        stack.start("preprocessor")
        stack.wait_ready("preprocessor")
    status, _ = wait_for_job(gateway, job["id"])
    assert status["state"] == "succeeded" and status["retry_reason"] is None, status


def test_triton_outage_gives_503_and_delays_jobs_until_it_is_back(stack, gateway, stack_videos) -> None:
    stack.stop("triton")
    try:
        response = upload(gateway, "/v1/detections", stack_videos["face"])
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "inference_unavailable" and "unavailable" in error["message"]

        # A job waits the outage out (DEEPFAKE_JOB_RETRY_BUDGET_S) instead of failing.
        job = upload(gateway, "/v1/jobs", stack_videos["face"]).json()
        wait_until_retrying(gateway, job["id"], "inference_unavailable")
        result = gateway.get(job["result_url"])
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_not_finished"

        assert httpx.get(f"{stack.urls['preprocessor']}/readyz").status_code == 503
        not_ready = httpx.get(f"{stack.urls['gateway']}/readyz")
        assert not_ready.status_code == 503 and "not ready" in not_ready.json()["error"]["message"]
    finally:
        stack.start("triton")
        stack.wait_ready("triton")
    status, _ = wait_for_job(gateway, job["id"])
    assert status["state"] == "succeeded" and status["attempts"] >= 2, status
    # Recovery needs no restart of the other services.
    assert upload(gateway, "/v1/detections", stack_videos["face"]).status_code == 200
