"""Transport failures are classified by type and status code, never by message text (issue 13), checked
with real failures on loopback: a closed port, a real gRPC server answering each status code, a real
HTTP server (uvicorn) answering errors, one that hangs, and one that drops the connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from cli.local_stack import free_port
from deepfake.retry import Backoff, call_with_retries
from gateway.preprocessor_client import PreprocessorClient, PreprocessorError
from inference.triton_backend import TritonBackend, TritonModelError, TritonUnavailableError
from tests.test_gateway_retries import serve

# ------------------------------------------------------------------------------------- Triton (gRPC)


class _Answer(grpc.GenericRpcHandler):
    """Every call to this real gRPC server ends with `status` (None: no service at all, as a server
    without Triton's API, which gRPC answers UNIMPLEMENTED); counts the calls it received."""

    def __init__(self, status: grpc.StatusCode | None) -> None:
        self.status = status
        self.calls = 0

    def service(self, handler_call_details):
        if self.status is None:
            return None

        def abort(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            context.abort(self.status, "no such model 'x' at 10.0.0.5")  # texts are never looked at

        return grpc.unary_unary_rpc_method_handler(abort)


@contextmanager
def grpc_server(answer: _Answer) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[answer])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def triton(url: str) -> TritonBackend:
    return TritonBackend(url, timeout_s=5.0, retries=2, retry_backoff_s=0.01)


def test_a_closed_port_is_unavailable_after_the_retries():
    with pytest.raises(TritonUnavailableError, match="after 3 attempts"):
        triton(f"127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("status", "error", "calls"),
    [
        (grpc.StatusCode.UNAVAILABLE, TritonUnavailableError, 3),  # retried, then 503
        (grpc.StatusCode.RESOURCE_EXHAUSTED, TritonUnavailableError, 3),
        (grpc.StatusCode.NOT_FOUND, TritonUnavailableError, 1),  # no such model: 503 at once
        (None, TritonUnavailableError, 0),  # not Triton's gRPC service (UNIMPLEMENTED): 503 at once
        (grpc.StatusCode.INVALID_ARGUMENT, TritonModelError, 1),  # Triton answered: our fault, a 500
        (grpc.StatusCode.INTERNAL, TritonModelError, 1),
    ],
)
def test_a_real_grpc_server_s_status_decides_the_error(status, error, calls):
    answer = _Answer(status)
    with grpc_server(answer) as url, pytest.raises(error):
        triton(url)
    assert answer.calls == calls


def test_the_retry_helper_retries_only_what_it_is_told_and_raises_the_last_failure():
    seen: list[int] = []

    def attempt(n: int) -> str:
        seen.append(n)
        if n < 2:
            raise ConnectionError(f"try {n}")
        return "ok"

    no_wait = Backoff(0.0, 0.0)
    assert call_with_retries(attempt, attempts=3, backoff=no_wait, retry_on=lambda e: True) == "ok"
    assert seen == [0, 1, 2]
    seen.clear()
    with pytest.raises(ConnectionError, match="try 1"):
        call_with_retries(attempt, attempts=2, backoff=no_wait, retry_on=lambda e: True)
    seen.clear()
    with pytest.raises(ConnectionError, match="try 0"):
        call_with_retries(attempt, attempts=5, backoff=no_wait, retry_on=lambda e: False)
    assert seen == [0]


# ------------------------------------------------------------------------------- preprocessor (httpx)


def _analyse(url: str, video: Path, timeout_s: float = 5.0) -> PreprocessorError:
    async def run() -> PreprocessorError:
        client = PreprocessorClient(url, timeout_s)
        try:
            await client.request_analysis(video, "v.mp4")
        except PreprocessorError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no error raised")

    return asyncio.run(run())


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"x" * 100)
    return path


def test_a_closed_preprocessor_port_is_preprocessor_unavailable(video):
    error = _analyse(f"http://127.0.0.1:{free_port()}", video)
    assert (error.code, error.http_status, error.transient) == ("preprocessor_unavailable", 503, True)
    assert error.headers == {"Retry-After": "5"}


def test_a_connection_dropped_without_an_answer_is_preprocessor_unavailable(video):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            connection.recv(1024)
            connection.close()  # no HTTP answer at all: httpx.RemoteProtocolError

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        error = _analyse(f"http://127.0.0.1:{port}", video)
    finally:
        listener.close()
    assert (error.code, error.transient) == ("preprocessor_unavailable", True)


def _answering(status: int, body: dict | None) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/analyze")
    async def answer() -> Response:
        return JSONResponse(body, status_code=status) if body is not None else Response(status_code=status)

    return app


@pytest.mark.parametrize(
    ("status", "body", "code", "public_status", "transient"),
    [
        (503, {"error": {"code": "busy", "message": "at 10.0.0.5"}}, "busy", 503, True),
        (
            503,
            {"error": {"code": "inference_unavailable", "message": "x"}},
            "inference_unavailable",
            503,
            True,
        ),
        (500, {"error": {"code": "model_error", "message": "x"}}, "model_error", 500, False),
        (422, {"error": {"code": "corrupt_video", "message": "broken"}}, "corrupt_video", 422, False),
        (401, {"error": {"code": "unauthorized", "message": "token"}}, "bad_gateway", 502, False),
        (503, None, "bad_gateway", 502, True),  # no error body: a proxy's answer, transient by status
        (500, None, "bad_gateway", 502, False),
        (
            404,
            {"error": {"code": "busy", "message": "x"}},
            "bad_gateway",
            502,
            False,
        ),  # code and status disagree
    ],
)
def test_a_real_server_s_error_answers_are_classified_by_status_and_code(
    video, status, body, code, public_status, transient
):
    port = free_port()
    with serve(_answering(status, body), port):
        error = _analyse(f"http://127.0.0.1:{port}", video)
    assert (error.code, error.http_status, error.transient) == (code, public_status, transient)
    if public_status >= 500:
        assert "10.0.0.5" not in error.message  # 5xx texts are ours


def test_a_preprocessor_that_does_not_answer_in_time_is_an_analysis_timeout(video):
    app = FastAPI()

    @app.post("/v1/analyze")
    async def hang() -> Response:
        await asyncio.sleep(10)
        return Response()

    port = free_port()
    with serve(app, port):
        error = _analyse(f"http://127.0.0.1:{port}", video, timeout_s=0.5)
    assert (error.code, error.http_status, error.transient) == ("analysis_timeout", 504, True)
