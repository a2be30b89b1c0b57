"""Uploads that go wrong on the wire or outlive their request, and files whose header hides their length.

- A streamed MKV/WebM states no duration: the gateway measures it from the packets, so the synchronous
  endpoint's limit holds.
- A body that stalls ends with 408 and no partial file; a client that disconnects is one log line and no
  partial file; files a crash left behind are swept at start and on a timer.
- The type is sniffed from the bytes: raw H.264/HEVC streams (Annex B) are videos (and are measured, so
  the synchronous limit holds); an animated WebP gets the preprocessor's ``animated_image``.

The stall and the disconnect need a real server: the gateway runs under uvicorn in a thread on 127.0.0.1
and a raw socket plays the client (sends headers with a Content-Length, then part of the body).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cli.local_stack import free_port
from deepfake.contracts.errors import ServiceError
from deepfake.uploads import sweep_orphan_uploads
from gateway.app import create_app
from gateway.jobs.sqlite_store import SqliteJobStore
from gateway.jobs.store import JobRecord
from gateway.settings import GatewaySettings
from gateway.video_check import check_duration
from tests import synth
from tests.test_gateway import KEY, assert_error_shape, make_gateway, post_video

BOUNDARY = "stallb0undary"


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("streamed")
    return {
        "long": synth.write_streamed_mkv(root / "streamed_10s.mkv", n_frames=250),  # 10 s at 25 fps
        "short": synth.write_streamed_mkv(root / "streamed_3s.mkv", n_frames=75),  # 3 s
    }


# ---- duration of files whose header states none ----------------------------------------------------


def test_streamed_mkv_duration_is_measured_from_its_packets(streamed):
    assert check_duration(streamed["short"], 5.0) == pytest.approx(3.0, abs=0.1)
    with pytest.raises(ServiceError) as refused:  # the one root: too_long is the pipeline's refusal
        check_duration(streamed["long"], 5.0, hint="; submit longer videos as a job")
    error = refused.value
    assert error.code == "too_long" and error.http_status == 413
    assert "more than" in error.message and "as a job" in error.message
    assert error.details["max_duration_s"] == 5.0 and error.details["duration_s"] > 5.0


def test_sync_endpoint_refuses_a_streamed_file_over_its_limit(
    tmp_path, random_model_path, default_detector, streamed
):
    with make_gateway(tmp_path, random_model_path, sync_max_duration_s=5, job_workers=0) as client:
        client.headers["X-API-Key"] = KEY
        error = assert_error_shape(post_video(client, "/v1/detections", streamed["long"]), 413, "too_long")
        assert "/v1/jobs" in error["message"]
        short = post_video(client, "/v1/detections", streamed["short"])
        assert short.status_code == 200, short.text
        # Jobs have their own (longer) limit: the same file is accepted there.
        assert post_video(client, "/v1/jobs", streamed["long"]).status_code == 202
        settings = client.app.state.settings
        assert len(list(settings.upload_dir.glob("*.upload"))) == 1  # only the queued job's file


# ---- a real server on loopback and a raw socket as the client ----------------------------------------


def gateway_settings(tmp_path: Path, **overrides) -> GatewaySettings:
    values = {
        "api_keys": KEY,
        "job_store_url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "upload_dir": tmp_path / "uploads",
        "preprocessor_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: no analysis here
        "job_workers": 0,
        "rate_limit_per_minute": 1000,
    }
    return GatewaySettings(**{**values, **overrides})


@contextmanager
def serve(app: FastAPI) -> Iterator[tuple[str, int]]:
    """`app` under uvicorn in a thread on 127.0.0.1 (log_config=None: its records reach caplog)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(20)


def start_upload(address: tuple[str, int], video: Path, sent_bytes: int = 4096) -> socket.socket:
    """POST /v1/jobs announcing the whole multipart body, but send only its first part."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="clip.mkv"\r\n'
        "Content-Type: video/x-matroska\r\n\r\n"
    ).encode()
    body = part + video.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(part) + sent_bytes < len(body)
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(head + body[: len(part) + sent_bytes])
    return sock


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def upload_files(settings: GatewaySettings) -> list[Path]:
    return list(settings.upload_dir.glob("*.upload"))


def test_a_stalled_upload_ends_with_408_and_leaves_no_file(tmp_path, streamed):
    settings = gateway_settings(tmp_path, upload_read_timeout_s=1.5)
    with serve(create_app(settings)) as address:
        sock = start_upload(address, streamed["long"])
        try:
            assert wait_until(lambda: upload_files(settings), 5), "the partial upload never reached disk"
            start = time.monotonic()
            status, headers, body = read_response(sock, timeout_s=15)  # the server closes the connection
            waited = time.monotonic() - start
        finally:
            sock.close()
        assert status == 408, body
        assert headers.get("connection") == "close"
        error = json.loads(body)["error"]
        assert error["code"] == "upload_timeout" and "1.5 s" in error["message"]
        assert error["details"]["read_timeout_s"] == 1.5 and error["details"]["received_bytes"] > 4096
        assert waited < 10
        assert upload_files(settings) == []


def test_a_client_disconnect_mid_upload_is_one_log_line_and_no_file(tmp_path, streamed, caplog):
    caplog.set_level(logging.INFO)
    settings = gateway_settings(tmp_path)
    with serve(create_app(settings)) as address:
        sock = start_upload(address, streamed["long"])
        assert wait_until(lambda: upload_files(settings), 5), "the partial upload never reached disk"
        sock.close()
        assert wait_until(lambda: not upload_files(settings), 10), "the partial file was left behind"
        assert wait_until(lambda: any("client disconnected" in r.getMessage() for r in caplog.records), 5)
        time.sleep(0.3)  # anything logged after the handler ran
        with socket.create_connection(address, timeout=10) as probe:  # the service is still fine
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(probe, 10)[0] == 200
    disconnects = [r for r in caplog.records if "client disconnected" in r.getMessage()]
    assert len(disconnects) == 1 and disconnects[0].levelno == logging.INFO
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


# ---- orphaned upload files ---------------------------------------------------------------------------


def make_upload_file(folder: Path, age_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.upload"
    path.write_bytes(b"\x1a\x45\xdf\xa3 partial")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_orphaned_uploads_are_swept_at_start_and_on_a_timer(tmp_path):
    settings = gateway_settings(tmp_path, upload_orphan_age_s=600, upload_sweep_interval_s=0.2)
    uploads = settings.upload_dir
    orphan = make_upload_file(uploads, age_s=3600)  # a crash left it: no job knows it
    queued = make_upload_file(uploads, age_s=3600)  # old, but a queued job still needs it
    fresh = make_upload_file(uploads, age_s=0)  # may be an upload in progress
    other = uploads / "README.txt"  # not a name the gateway writes: never touched
    other.write_text("operator notes")
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    store = SqliteJobStore(str(tmp_path / "jobs.sqlite"))
    now = time.time()
    store.create(JobRecord("j1", "queued", "owner", str(queued.resolve()), "a.mkv", None, now, now))
    store.close()
    with TestClient(create_app(settings)):
        assert not orphan.exists()  # swept before the gateway served its first request
        assert queued.exists() and fresh.exists() and other.exists()
        late = make_upload_file(uploads, age_s=3600)
        assert wait_until(lambda: not late.exists(), 10), "the timer never swept"
        assert queued.exists() and fresh.exists() and other.exists()


def test_sweep_keeps_referenced_and_recent_files(tmp_path):
    old, kept = make_upload_file(tmp_path, 100), make_upload_file(tmp_path, 100)
    recent = make_upload_file(tmp_path, 10)
    assert sweep_orphan_uploads(tmp_path, 50, keep=[str(kept)]) == [old]
    assert kept.exists() and recent.exists()
    assert sweep_orphan_uploads(tmp_path / "missing", 50) == []


# ---- what the type sniffing accepts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    return {
        "h264": synth.write_indexed_video(root / "clip.h264", n_frames=50, gop=25),  # 2 s, Annex B
        "h264_long": synth.write_indexed_video(root / "long.h264", n_frames=250, gop=25),  # 10 s
    }


def test_raw_annex_b_streams_are_sniffed_as_video(raw_streams, tmp_path):
    from deepfake.uploads import sniff_video_container

    head = raw_streams["h264"].read_bytes()[:256]
    assert head.startswith(b"\x00\x00\x00\x01") and sniff_video_container(head) == "h264"
    assert sniff_video_container(b"\x00\x00\x01\x09\xf0" + head) == "h264"  # 3-byte start code, AUD first
    assert sniff_video_container(b"\x00\x00\x00\x01\x40\x01\x0c\x01" + bytes(248)) == "hevc"  # VPS first
    # Still refused: the MPEG program stream's start codes stay "mpeg", other NAL-like bytes stay unknown.
    assert sniff_video_container(b"\x00\x00\x01\xba" + bytes(252)) == "mpeg"
    assert sniff_video_container(b"\x00\x00\x00\x01\xff" + bytes(251)) is None
    assert sniff_video_container(b"\x00\x00\x00\x01\x65" + bytes(251)) is None  # a slice: no stream start
    assert sniff_video_container(bytes(256)) is None


def test_the_gateway_analyses_a_raw_h264_stream_and_holds_its_duration_limit(
    tmp_path, random_model_path, default_detector, raw_streams
):
    with make_gateway(tmp_path, random_model_path, sync_max_duration_s=5, job_workers=0) as client:
        client.headers["X-API-Key"] = KEY
        answer = post_video(client, "/v1/detections", raw_streams["h264"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["video"]["duration_s"] == pytest.approx(2.0, abs=0.1)
        # No timestamps in the stream, so no duration in a header: measured, and the sync limit holds.
        error = assert_error_shape(
            post_video(client, "/v1/detections", raw_streams["h264_long"]), 413, "too_long"
        )
        assert error["details"]["duration_s"] > 5


def test_an_animated_webp_gets_the_preprocessors_code_and_a_still_one_stays_not_a_video(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the WebP")
    animated = synth.write_animated_webp(tmp_path / "anim.webp")
    still = tmp_path / "still.webp"
    pil.fromarray(synth.frame_code_image(0)).save(still, format="WEBP")
    with TestClient(create_app(gateway_settings(tmp_path))) as client:
        client.headers["X-API-Key"] = KEY
        error = assert_error_shape(post_video(client, "/v1/jobs", animated), 415, "animated_image")
        assert "animated WebP" in error["message"]
        assert_error_shape(post_video(client, "/v1/jobs", still), 415, "not_a_video")
        assert upload_files(client.app.state.settings) == []
