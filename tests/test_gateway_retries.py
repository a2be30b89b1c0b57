"""Jobs ride out outages: the preprocessor or Triton unavailable re-queues a job with backoff (issue 10).

The services are real and talk HTTP over loopback only: the gateway (its app, job runner and preprocessor
client, in-process) reaches the preprocessor at 127.0.0.1:<port>, where nothing listens until the test
starts the real preprocessor app under uvicorn on that port. Triton's outage is a real TritonBackend
pointed at a closed loopback port (so the preprocessor answers 503 `inference_unavailable` exactly as in
production); "Triton is back" hands the preprocessor the ONNX Runtime backend instead of a second server,
which this 2-core machine could not spare (tests/integration restarts a real tritonserver).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cli.local_stack import free_port
from deepfake.contracts.schemas import ErrorDetail
from deepfake.retry import Backoff
from gateway.app import create_app
from gateway.jobs.sqlite_store import SqliteJobStore
from gateway.jobs.store import JobRecord
from gateway.settings import GatewaySettings
from inference.onnx_backend import OnnxBackend
from inference.triton_backend import TritonBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings
from tests import synth
from tests.test_gateway import KEY, assert_no_internal_address, post_video

FAST_RETRIES = {"job_retry_backoff_s": 0.2, "job_retry_backoff_max_s": 0.4}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retry_clips")
    return {
        "short": synth.write_face_video(root / "short.mp4", n_frames=12, width=320, height=180).path,
        "long": synth.write_face_video(root / "long.mp4", n_frames=100, width=160, height=96).path,  # 4 s
    }


def gateway_client(tmp_path: Path, port: int, **overrides) -> TestClient:
    values = {
        "api_keys": KEY,
        "job_store_url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "upload_dir": tmp_path / "uploads",
        "preprocessor_url": f"http://127.0.0.1:{port}",
        "rate_limit_per_minute": 1000,
        "job_poll_s": 0.05,
        "job_workers": 1,
    }
    client = TestClient(create_app(GatewaySettings(**{**values, **overrides})))
    client.headers["X-API-Key"] = KEY
    return client


def preprocessor_app(tmp_path: Path, backend_factory, max_duration_s: float = 600) -> FastAPI:
    settings = ServiceSettings(upload_dir=tmp_path / "pp_uploads", max_duration_s=max_duration_s)
    return create_preprocessor_app(settings, backend_factory=backend_factory)


@contextmanager
def serve(app: FastAPI, port: int) -> Iterator[None]:
    """`app` under uvicorn in a thread on 127.0.0.1:`port`."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(20)


def wait_status(
    client: TestClient, job_id: str, condition: Callable[[dict], bool], timeout_s: float = 60
) -> dict:
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if condition(status):
            return status
        assert status["state"] not in ("succeeded", "failed"), f"job finished too early: {status}"
        time.sleep(0.03)
    raise AssertionError(f"condition not met in {timeout_s} s: {status}")


def wait_finished(client: TestClient, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("succeeded", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job not finished: {status}")


def unix(iso: str) -> float:
    """A JobStatus time (ISO 8601, UTC) as Unix time."""
    stamp = datetime.fromisoformat(iso)
    assert stamp.tzinfo is not None, iso
    return stamp.timestamp()


def waiting_to_retry(code: str, attempts: int) -> Callable[[dict], bool]:
    def check(status: dict) -> bool:
        reason = status.get("retry_reason") or {}
        return (
            status["state"] == "queued"
            and status["attempts"] >= attempts
            and reason.get("code") == code
            and status.get("next_attempt_at") is not None
        )

    return check


# ---- real services on loopback -------------------------------------------------------------------------


def test_a_job_submitted_while_the_preprocessor_is_down_finishes_once_it_is_up(
    tmp_path, random_model_path, default_detector, clips
):
    port = free_port()  # nobody listens there yet
    with gateway_client(tmp_path, port, job_retry_budget_s=120, **FAST_RETRIES) as client:
        created = post_video(client, "/v1/jobs", clips["short"])
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        # More attempts than the old fixed retries allowed (3), and the status says the job waits.
        waiting = wait_status(client, job_id, waiting_to_retry("preprocessor_unavailable", attempts=4))
        assert waiting["error"] is None and waiting["result_url"] is None
        assert unix(waiting["next_attempt_at"]) > time.time() - 1
        assert_no_internal_address(waiting["retry_reason"], str(port), "127.0.0.1")

        app = preprocessor_app(tmp_path, lambda: OnnxBackend(random_model_path, threads=1))
        with serve(app, port):
            status = wait_finished(client, job_id)
        assert status["state"] == "succeeded", status
        assert status["next_attempt_at"] is None and status["retry_reason"] is None
        assert status["attempts"] >= 5
        assert client.get(status["result_url"]).json()["path"] == "short.mp4"
        metrics = client.get("/metrics").text
        assert 'gateway_job_retries_total{code="preprocessor_unavailable"}' in metrics


def test_a_job_whose_preprocessor_stays_down_fails_clearly_when_the_budget_is_spent(tmp_path, clips):
    port = free_port()  # nobody ever listens there
    budget_s = 1.5
    with gateway_client(tmp_path, port, job_retry_budget_s=budget_s, **FAST_RETRIES) as client:
        submitted = time.time()
        job_id = post_video(client, "/v1/jobs", clips["short"]).json()["id"]
        status = wait_finished(client, job_id, timeout_s=30)
        assert status["state"] == "failed", status
        error = status["error"]
        assert error["code"] == "retries_exhausted"
        assert "unavailable" in error["message"] and "again later" in error["message"]
        assert error["details"]["last_error"]["code"] == "preprocessor_unavailable"
        assert error["details"]["retry_budget_s"] == budget_s
        assert error["details"]["attempts"] == status["attempts"] >= 3
        assert unix(status["updated_at"]) - submitted >= budget_s - 0.1  # retried for the whole budget
        assert unix(status["updated_at"]) - submitted < budget_s + 5
        assert status["next_attempt_at"] is None and status["retry_reason"] is None
        assert_no_internal_address(error, str(port), "127.0.0.1")
        assert_no_internal_address(error["details"]["last_error"], str(port), "127.0.0.1")
        result = client.get(f"/v1/jobs/{job_id}/result")
        assert result.status_code == 409
        assert result.json()["error"]["details"]["job_error"]["code"] == "retries_exhausted"
        assert not list((tmp_path / "uploads").glob("*.upload"))  # a failed job keeps no upload


def test_triton_unavailable_requeues_the_job_and_client_faults_still_fail_at_once(
    tmp_path, random_model_path, default_detector, clips
):
    triton_back = threading.Event()
    triton_url = f"127.0.0.1:{free_port()}"  # nobody listens there: Triton is down

    def backend():
        if not triton_back.is_set():
            return TritonBackend(triton_url, timeout_s=2, retries=0)  # raises TritonUnavailableError
        return OnnxBackend(random_model_path, threads=1)

    port = free_port()
    app = preprocessor_app(tmp_path, backend, max_duration_s=3)
    with serve(app, port), gateway_client(tmp_path, port, job_retry_budget_s=120, **FAST_RETRIES) as client:
        job_id = post_video(client, "/v1/jobs", clips["short"]).json()["id"]
        waiting = wait_status(client, job_id, waiting_to_retry("inference_unavailable", attempts=2))
        assert_no_internal_address(waiting["retry_reason"], triton_url, triton_url.split(":")[1])

        triton_back.set()
        status = wait_finished(client, job_id)
        assert status["state"] == "succeeded", status
        assert status["attempts"] >= 3 and status["retry_reason"] is None

        # The video's own fault is final at once: 4 s over the preprocessor's 3 s.
        too_long = post_video(client, "/v1/jobs", clips["long"]).json()["id"]
        failed = wait_finished(client, too_long)
        assert failed["state"] == "failed" and failed["error"]["code"] == "too_long", failed
        assert failed["attempts"] == 1 and failed["retry_reason"] is None


# ---- the pieces: store, classification, backoff --------------------------------------------------------


def record(job_id: str, created_at: float) -> JobRecord:
    return JobRecord(
        id=job_id, state="queued", owner="o", upload_path=f"/u/{job_id}", filename="a.mp4",
        callback_url=None, created_at=created_at, updated_at=created_at,
    )  # fmt: skip


def test_a_deferred_job_is_not_claimed_before_its_time(tmp_path):
    store = SqliteJobStore(str(tmp_path / "jobs.sqlite"))
    store.create(record("old", created_at=1))
    store.create(record("new", created_at=2))
    reason = ErrorDetail(code="busy", message="the analysis service is busy; retry later")
    assert store.claim_next().id == "old"
    assert store.defer("old", time.time() + 60, reason, retry_since=123.0)
    waiting = store.get("old")
    assert waiting.state == "queued" and waiting.retry_reason == reason and waiting.retry_since == 123.0
    assert store.claim_next().id == "new"  # the older job waits for its time
    assert store.claim_next() is None
    assert store.defer("new", time.time() - 1, reason, retry_since=200.0)
    again = store.claim_next()
    assert again.id == "new" and again.attempts == 2 and again.next_attempt_at is None
    assert again.retry_since == 200.0  # the budget counts from the first failure
    assert store.finish("new", "{}")
    done = store.get("new")
    assert done.retry_reason is None and done.retry_since is None and done.next_attempt_at is None
    assert not store.defer("missing", 0.0, reason, 0.0)


def test_a_store_file_of_an_older_gateway_gets_the_retry_columns(tmp_path):
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as db:  # the schema before retries
        db.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL, "
            "upload_path TEXT, filename TEXT, callback_url TEXT, created_at REAL NOT NULL, "
            "updated_at REAL NOT NULL, progress REAL NOT NULL DEFAULT 0, "
            "attempts INTEGER NOT NULL DEFAULT 0, result_json TEXT, error_json TEXT);"
            "INSERT INTO jobs (id, state, owner, created_at, updated_at) VALUES ('j', 'queued', 'o', 1, 1);"
        )
    db.close()
    store = SqliteJobStore(str(path))
    job = store.claim_next()
    assert job.id == "j" and job.next_attempt_at is None and job.retry_reason is None
    store.close()


# How the gateway classifies the preprocessor's answers and transport failures: tests/test_transport_errors.py
# (a real server on loopback).


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    backoff = Backoff(base_s=1.0, max_s=10.0, jitter=0.5)
    assert [backoff.nominal(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    rng = random.Random(0)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100  # spread, never under half
    assert Backoff(1.0, 10.0, jitter=0.0).delay(2) == 2.0
    assert backoff.nominal(10_000) == 10.0
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)
