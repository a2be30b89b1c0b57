"""WebSocket /v1/streams through real uvicorn servers on loopback: the gateway relays to the preprocessor,
which runs the stream session on the in-process ONNX Runtime backend (random-weight model) and the real
default detector. Results in order with timestamps, every refusal's close code, and clients that go away
mid-stream leaving no session or thread behind."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import cv2
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from deepfake.contracts.schemas import StreamError, StreamResult, StreamSummary
from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings
from tests import synth
from tests.test_gateway_uploads import free_port, serve

KEY = "stream-key"
FPS = 25.0


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return synth.face_frames(48, width=640, height=360, motion="pan")[0]


def jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def gateway_settings(tmp_path, preprocessor_url: str, **overrides) -> GatewaySettings:
    values = {
        "api_keys": f"{KEY},other-key",
        "job_store_url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "upload_dir": tmp_path / "uploads",
        "preprocessor_url": preprocessor_url,
        "job_workers": 0,
        "rate_limit_per_minute": 1000,
        "stream_max_per_key": 2,
        "stream_max_frame_bytes": 1_500_000,
        "stream_idle_timeout_s": 3.0,
    }
    return GatewaySettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, random_model_path, default_detector):
    """(gateway ws URL, preprocessor app, gateway app), both served by uvicorn on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("streams")
    backend = OnnxBackend(random_model_path, threads=1)
    pre = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp / "pp", threads=1, max_streams=4), backend_factory=lambda: backend
    )
    with serve(pre) as (host, pre_port):
        gateway = create_app(gateway_settings(tmp, f"http://{host}:{pre_port}"))
        with serve(gateway) as (_, port):
            yield f"ws://{host}:{port}/v1/streams", pre, gateway


def open_stream(url: str, key: str | None = KEY, query: bool = False):
    headers = {"X-API-Key": key} if key and not query else None
    return connect(f"{url}?api_key={key}" if query else url, additional_headers=headers, open_timeout=10)


def read_all(ws, timeout_s: float = 60) -> tuple[list[dict], int | None]:
    """Every message until the server closes; (messages, close code)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=timeout_s)))
    except ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd else None


def refused(ws) -> tuple[StreamError, int | None]:
    messages, code = read_all(ws, timeout_s=30)
    assert len(messages) == 1, messages
    return StreamError.model_validate(messages[0]), code


def wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def no_stream_left(pre, gateway) -> bool:
    sessions = [t for t in threading.enumerate() if t.name == "stream-session" and t.is_alive()]
    return pre.state.service.streams == 0 and gateway.state.open_streams == {} and not sessions


def test_timed_frames_stream_results_in_order_then_the_summary(stack, frames):
    url, pre, gateway = stack
    with open_stream(url) as ws:
        for i, rgb in enumerate(frames):
            ws.send(json.dumps({"t": round(i / FPS, 4)}))
            ws.send(jpeg(rgb))
            time.sleep(1 / FPS)  # the client's real pace
        ws.send(json.dumps({"type": "end"}))
        messages, code = read_all(ws)
    assert code == 1000
    wait_until(lambda: no_stream_left(pre, gateway))
    registry = gateway.state.metrics.registry
    assert registry.get_sample_value("gateway_stream_ends_total", {"reason": "completed"}) >= 1
    assert registry.get_sample_value("gateway_streams_open") == 0
    assert [m["type"] for m in messages[:-1]] == ["result"] * (len(messages) - 1)
    results = [StreamResult.model_validate(m) for m in messages[:-1]]
    summary = StreamSummary.model_validate(messages[-1])
    sent_times = {round(i / FPS, 3) for i in range(len(frames))}
    assert results and all(r.t in sent_times for r in results)
    assert [r.t for r in results] == sorted(r.t for r in results)
    assert any(r.tracks for r in results)
    assert {t.id for r in results for t in r.tracks} == {0}
    assert summary.frames_received == len(frames)
    assert summary.frames_analysed + summary.frames_dropped == len(frames) // 2
    assert [t.id for t in summary.tracks] == [0]
    wait_until(lambda: no_stream_left(pre, gateway))


def test_png_frames_without_times_take_their_arrival_and_the_key_may_be_a_query_parameter(stack, frames):
    url, pre, gateway = stack
    with open_stream(url, query=True) as ws:
        for rgb in frames[:24]:
            ws.send(png(rgb))
            time.sleep(1 / FPS)
        ws.send(json.dumps({"type": "end"}))
        messages, code = read_all(ws)
    assert code == 1000 and messages[-1]["type"] == "final"
    times = [m["t"] for m in messages[:-1]]
    assert times and times == sorted(times) and times[0] > 0
    assert messages[-1]["frames_received"] == 24


def test_a_webm_byte_stream_is_decoded_as_it_arrives(stack, frames):
    url, pre, gateway = stack
    webm = synth.encode_live_webm(frames, fps=FPS)
    with open_stream(url) as ws:
        for start in range(0, len(webm), 8192):  # MediaRecorder-sized chunks, at about the clip's pace
            ws.send(webm[start : start + 8192])
            time.sleep(len(frames) / FPS * 8192 / len(webm))
        early = json.loads(ws.recv(timeout=60))  # results come while the stream is still open
        ws.send(json.dumps({"type": "end"}))
        messages, code = read_all(ws)
        messages.insert(0, early)
    assert early["type"] == "result"
    assert code == 1000, messages[-1:]
    summary = StreamSummary.model_validate(messages[-1])
    results = [StreamResult.model_validate(m) for m in messages[:-1]]
    assert summary.frames_received == len(frames)
    # Times come from the container: multiples of the frame interval, in order.
    frame_times = {round(i / FPS, 3) for i in range(len(frames))}
    assert results and all(r.t in frame_times for r in results)
    assert [r.t for r in results] == sorted(r.t for r in results)
    assert [t.id for t in summary.tracks] == [0]
    wait_until(lambda: no_stream_left(pre, gateway))


def test_a_byte_stream_that_is_no_video_closes_4415(stack):
    url, pre, gateway = stack
    with open_stream(url) as ws:
        ws.send(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 64)  # an EBML start, then nonsense
        ws.send(json.dumps({"type": "end"}))
        error, close = refused(ws)
    assert error.error.code == "not_a_video" and close == 4415
    wait_until(lambda: no_stream_left(pre, gateway))


@pytest.mark.parametrize(
    ("key", "code"), [(None, "unauthorized"), ("wrong-key", "unauthorized")], ids=["no key", "wrong key"]
)
def test_without_a_valid_key_the_stream_closes_4401(stack, key, code):
    with open_stream(stack[0], key=key) as ws:
        error, close = refused(ws)
    assert error.error.code == code and close == 4401


def test_refused_frames_and_messages_close_with_their_code(stack, frames):
    url, pre, gateway = stack
    cases = [
        (b"\x00garbage, not an image" * 10, "invalid_frame", 4415),  # refused by the gateway
        (jpeg(frames[0]) + b"\x00" * 1_500_000, "too_large", 4413),
        (png(np.zeros((16, 16, 3), np.uint8)), "frame_too_small", 4422),
        ("not json", "bad_message", 4400),
        (json.dumps({"t": -1}), "bad_message", 4400),
    ]
    corrupt = bytearray(png(frames[0]))  # a valid PNG header, its pixels broken: refused by the preprocessor
    for i in range(60, len(corrupt) - 20):
        corrupt[i] = (corrupt[i] * 7 + 3) % 256
    cases.append((bytes(corrupt), "invalid_frame", 4415))
    for payload, expected, close_code in cases:
        with open_stream(url) as ws:
            ws.send(payload)
            error, close = refused(ws)
        assert (error.error.code, close) == (expected, close_code), payload[:20]
    wait_until(lambda: no_stream_left(pre, gateway))
    registry = gateway.state.metrics.registry
    assert all(registry.get_sample_value("gateway_stream_ends_total", {"reason": c}) for _, c, _ in cases)


def test_too_many_streams_for_one_key(stack, frames):
    url, pre, gateway = stack
    with open_stream(url) as first, open_stream(url) as second:
        for ws in (first, second):
            ws.send(jpeg(frames[0]))
        wait_until(lambda: gateway.state.open_streams and sum(gateway.state.open_streams.values()) == 2)
        with open_stream(url) as third:
            error, close = refused(third)
        assert error.error.code == "too_many_streams" and close == 4429
        with open_stream(url, key="other-key") as other:  # another key has its own allowance
            other.send(json.dumps({"type": "end"}))
            messages, close = read_all(other)
        assert close == 1000 and messages[-1]["type"] == "final"
    wait_until(lambda: no_stream_left(pre, gateway))
    with open_stream(url) as again:  # closed streams give their place back
        again.send(json.dumps({"type": "end"}))
        assert read_all(again)[1] == 1000


def test_a_silent_stream_closes_4408(stack, frames):
    url, pre, gateway = stack
    with open_stream(url) as ws:
        ws.send(jpeg(frames[0]))
        error, close = refused(ws)
    assert error.error.code == "idle_timeout" and close == 4408
    wait_until(lambda: no_stream_left(pre, gateway))


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_client_leaving_mid_stream_leaves_no_session_or_thread(stack, frames, how):
    url, pre, gateway = stack
    with open_stream(url) as ws:
        for i, rgb in enumerate(frames[:20]):
            ws.send(json.dumps({"t": i / FPS}))
            ws.send(jpeg(rgb))
        wait_until(lambda: pre.state.service.streams == 1)
        if how == "close":
            ws.close()
        else:  # the connection just disappears: no close frame
            with contextlib.suppress(OSError):
                ws.socket.shutdown(2)
            ws.socket.close()
        wait_until(lambda: no_stream_left(pre, gateway))


def test_the_preprocessor_unreachable_closes_4503(tmp_path, frames):
    gateway = create_app(gateway_settings(tmp_path, f"http://127.0.0.1:{free_port()}"))
    with serve(gateway) as (host, port), open_stream(f"ws://{host}:{port}/v1/streams") as ws:
        error, close = refused(ws)
    assert error.error.code == "preprocessor_unavailable" and close == 4503
    assert "127.0.0.1" not in error.error.message


def test_the_preprocessor_stream_needs_the_service_token(tmp_path, random_model_path):
    pre = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp_path / "pp", service_token="s3cret"),
        backend_factory=lambda: OnnxBackend(random_model_path, threads=1),
    )
    with serve(pre) as (host, port):
        with pytest.raises(InvalidStatus) as refused_handshake:
            with connect(f"ws://{host}:{port}/v1/streams", open_timeout=10):
                pass
        assert refused_handshake.value.response.status_code == 403
        with connect(
            f"ws://{host}:{port}/v1/streams", additional_headers={"Authorization": "Bearer s3cret"}
        ) as ws:
            ws.send(json.dumps({"type": "end"}))
            assert read_all(ws)[1] == 1000


def test_the_asyncapi_description_holds_the_models_the_server_sends(tmp_path):
    """GET /v1/streams/asyncapi.json (no key: a description): every message reference resolves and the
    payload schemas are the contract models'."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(gateway_settings(tmp_path, "http://127.0.0.1:9"))) as client:
        doc = client.get("/v1/streams/asyncapi.json").json()
        assert "/v1/streams/asyncapi.json" in client.get("/openapi.json").json()["paths"]
    assert doc["asyncapi"] == "2.6.0"
    channel = doc["channels"]["/v1/streams"]
    components = doc["components"]
    for direction in ("publish", "subscribe"):
        for option in channel[direction]["message"]["oneOf"]:
            name = option["$ref"].rsplit("/", 1)[-1]
            payload = components["messages"][name]["payload"]
            if "$ref" in payload:
                assert payload["$ref"].rsplit("/", 1)[-1] in components["schemas"]
    schemas = components["schemas"]
    assert set(schemas["StreamResult"]["properties"]) == set(StreamResult.model_fields)
    assert set(schemas["StreamSummary"]["properties"]) == set(StreamSummary.model_fields)
    assert schemas["StreamTrack"]["required"]  # nested models are components too


def test_inference_unavailable_closes_4503_through_the_gateway(tmp_path):
    """The preprocessor's backend is a real Triton client for an address where nothing listens."""
    from inference.triton_backend import TritonBackend

    triton_url = f"127.0.0.1:{free_port()}"
    pre = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp_path / "pp"),
        backend_factory=lambda: TritonBackend(triton_url, timeout_s=2, retries=0),
    )
    with serve(pre) as (host, pre_port):
        gateway = create_app(gateway_settings(tmp_path, f"http://{host}:{pre_port}"))
        with serve(gateway) as (_, port), open_stream(f"ws://{host}:{port}/v1/streams") as ws:
            error, close = refused(ws)
        assert pre.state.service.streams == 0
    assert error.error.code == "inference_unavailable" and close == 4503
    assert triton_url.split(":")[1] not in error.error.message
