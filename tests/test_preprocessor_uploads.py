"""The preprocessor's own upload spool: a stalled body ends with 408, and files a crash left behind are
swept at start and on a timer (the gateway's rules, tests/test_gateway_uploads.py, for the other side).

The stall needs a real server: the preprocessor runs under uvicorn in a thread on 127.0.0.1 (no token
configured: loopback callers are served) and a raw socket plays the gateway.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app
from preprocessor.service_settings import ServiceSettings
from tests.test_gateway_uploads import make_upload_file, read_response, serve, wait_until

BOUNDARY = "stallb0undary"


def make_app(settings: ServiceSettings, random_model_path: Path):
    return create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))


def spooled(settings: ServiceSettings) -> list[Path]:
    return list(settings.spool_dir().glob("*.upload"))


def test_the_upload_settings_share_the_gateways_names(monkeypatch):
    monkeypatch.setenv("DEEPFAKE_UPLOAD_READ_TIMEOUT_S", "7")
    monkeypatch.setenv("DEEPFAKE_UPLOAD_ORPHAN_AGE_S", "120")
    monkeypatch.setenv("DEEPFAKE_UPLOAD_SWEEP_INTERVAL_S", "30")
    settings = ServiceSettings()
    assert (settings.upload_read_timeout_s, settings.upload_orphan_age_s) == (7, 120)
    assert settings.upload_sweep_interval_s == 30


def test_a_stalled_upload_to_the_preprocessor_ends_with_408_and_leaves_no_file(
    tmp_path, random_model_path, default_detector
):
    settings = ServiceSettings(upload_dir=tmp_path / "spool", upload_read_timeout_s=1.5)
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="clip.mkv"\r\n'
        "Content-Type: video/x-matroska\r\n\r\n"
    ).encode()
    body = part + b"\x1a\x45\xdf\xa3" + bytes(64 * 1024) + f"\r\n--{BOUNDARY}--\r\n".encode()
    with serve(make_app(settings, random_model_path)) as address:
        sock = socket.create_connection(address, timeout=10)
        try:
            sock.sendall(
                (
                    f"POST /v1/analyze HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body[: len(part) + 8192]
            )
            assert wait_until(lambda: spooled(settings), 5), "the partial upload never reached disk"
            start = time.monotonic()
            status, headers, raw = read_response(sock, timeout_s=15)
            waited = time.monotonic() - start
        finally:
            sock.close()
    assert status == 408, raw
    error = json.loads(raw)["error"]
    assert error["code"] == "upload_timeout" and error["details"]["read_timeout_s"] == 1.5
    assert waited < 10
    assert spooled(settings) == []


@pytest.mark.parametrize("default_folder", [False, True])
def test_orphaned_spool_files_are_swept_at_start_and_on_a_timer(
    tmp_path, monkeypatch, random_model_path, default_detector, default_folder
):
    if default_folder:  # no upload_dir: <temp dir>/deepfake-preprocessor, this test's own temp dir
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
        settings = ServiceSettings(upload_orphan_age_s=600, upload_sweep_interval_s=0.2)
        assert settings.spool_dir() == tmp_path / "deepfake-preprocessor"
    else:
        settings = ServiceSettings(
            upload_dir=tmp_path / "spool", upload_orphan_age_s=600, upload_sweep_interval_s=0.2
        )
    spool = settings.spool_dir()
    orphan = make_upload_file(spool, age_s=3600)  # a crash left it
    fresh = make_upload_file(spool, age_s=0)  # may be an upload or analysis in progress
    other = spool / "notes.txt"  # not a name the service writes: never touched
    other.write_text("operator notes")
    with TestClient(make_app(settings, random_model_path), client=("127.0.0.1", 50000)):
        assert not orphan.exists()  # swept before the first request
        assert fresh.exists() and other.exists()
        late = make_upload_file(spool, age_s=3600)
        assert wait_until(lambda: not late.exists(), 10), "the timer never swept"
        assert fresh.exists() and other.exists()
