"""Two gateway replicas share one PostgreSQL job store and one upload folder; one dies mid-job (issue 10).

Everything is real and on loopback: a PostgreSQL server the tests start (tests/postgres_server.py), the
preprocessor service as a uvicorn process (ONNX Runtime backend, tests/onnx_preprocessor.py) and two
gateway processes (`uvicorn --factory gateway.app:create_app`). Jobs are submitted to both; gateway A is
killed with SIGKILL while it runs some of them (no shutdown code runs, its rows stay 'running' under its
lease). Gateway B must put them back in the queue once A's lease has run out, read their uploads from the
shared folder and finish every job, A's included, each exactly once more.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import httpx
import psycopg

from cli.local_stack import free_port
from deepfake.processes import ManagedProcess, http_ready
from deepfake.settings import REPO_ROOT
from tests import synth

KEY = "replica-test-key"
LEASE_S = 3.0


class Service(ManagedProcess):
    """One uvicorn service process (deepfake.processes: its own session, so SIGKILL reaches it all)."""

    def __init__(self, name: str, factory: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFAKE_")}
        full_env.update(env, PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "info"]  # fmt: skip
        ready = http_ready(f"{self.url}/readyz")
        super().__init__(name, command, log_dir / f"{name}.log", ready, full_env, REPO_ROOT, poll_s=0.2)
        self.start()

    def wait_ready(self, timeout_s: float = 90) -> None:
        super().wait_ready(timeout_s)

    def stop(self, timeout_s: float = 15) -> None:
        super().stop(timeout_s)


def running_jobs_of(url: str, pid: int) -> set[str]:
    """The jobs the gateway process `pid` holds (replica ids are host:pid:tag, gateway.jobs.store)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id FROM jobs WHERE state = 'running' AND lease_owner LIKE %s", (f"%:{pid}:%",)
        ).fetchall()
    return {row[0] for row in rows}


def submit(client: httpx.Client, video: Path) -> str:
    with video.open("rb") as handle:
        response = client.post("/v1/jobs", files={"file": (video.name, handle, "video/mp4")})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_replica_killed_mid_job_leaves_its_jobs_to_the_other(
    tmp_path, postgres_url, random_model_path, default_detector
) -> None:
    uploads = tmp_path / "shared-uploads"
    logs = tmp_path / "logs"
    logs.mkdir()
    video = synth.write_face_video(tmp_path / "face.mp4", n_frames=30, width=320, height=180).path
    preprocessor = Service(
        "preprocessor",
        "tests.onnx_preprocessor:create_app",
        {
            "DEEPFAKE_MODEL_PATH": str(random_model_path),
            "DEEPFAKE_WORKERS": "1",  # one analysis at a time: the gateways' jobs wait, running, for it
            "DEEPFAKE_QUEUE_SIZE": "16",
            "DEEPFAKE_THREADS": "1",
            "DEEPFAKE_UPLOAD_DIR": str(tmp_path / "preprocessor-spool"),
        },
        logs,
    )
    gateway_env = {
        "DEEPFAKE_API_KEYS": KEY,
        "DEEPFAKE_PREPROCESSOR_URL": preprocessor.url,
        "DEEPFAKE_JOB_STORE_URL": postgres_url,
        "DEEPFAKE_UPLOAD_DIR": str(uploads),
        "DEEPFAKE_JOB_LEASE_S": str(LEASE_S),
        "DEEPFAKE_JOB_WORKERS": "2",
        "DEEPFAKE_JOB_POLL_S": "0.2",
        "DEEPFAKE_RATE_LIMIT_PER_MINUTE": "1000",
    }
    services = [preprocessor]
    try:
        preprocessor.wait_ready()
        a = Service("gateway-a", "gateway.app:create_app", gateway_env, logs)
        services.append(a)
        b = Service("gateway-b", "gateway.app:create_app", gateway_env, logs)
        services.append(b)
        a.wait_ready()
        b.wait_ready()
        headers = {"X-API-Key": KEY}
        with (
            httpx.Client(base_url=a.url, headers=headers, timeout=60) as to_a,
            httpx.Client(base_url=b.url, headers=headers, timeout=60) as to_b,
        ):
            jobs = [submit(to_a if i % 2 == 0 else to_b, video) for i in range(6)]

            deadline = time.monotonic() + 60
            while not running_jobs_of(postgres_url, a.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            a.kill()
            orphaned = running_jobs_of(postgres_url, a.pid)
            assert orphaned, "gateway A was killed holding no job: nothing was tested"

            finished = {}
            deadline = time.monotonic() + 120
            while len(finished) < len(jobs) and time.monotonic() < deadline:
                for job_id in set(jobs) - set(finished):
                    status = to_b.get(f"/v1/jobs/{job_id}").json()
                    if status["state"] in ("succeeded", "failed"):
                        finished[job_id] = status
                time.sleep(0.2)
            assert len(finished) == len(jobs), f"unfinished after 120 s: {set(jobs) - set(finished)}"
            assert all(s["state"] == "succeeded" for s in finished.values()), finished
            for job_id in orphaned:
                assert finished[job_id]["attempts"] == 2, finished[job_id]  # A's claim, then B's
                result = to_b.get(f"/v1/jobs/{job_id}/result")
                assert result.status_code == 200 and result.json()["verdict"], result.text
            assert {job_id: s["attempts"] for job_id, s in finished.items() if job_id not in orphaned} == {
                job_id: 1 for job_id in set(jobs) - orphaned
            }
        assert list(uploads.iterdir()) == []  # every upload read by whoever finished it, then removed
        # A's leases can run out in one sweep of B's or in several (on a loaded machine): count them all
        requeued = re.findall(
            r"re-queued (\d+) job\(s\) whose gateway replica stopped", b.log_path.read_text()
        )
        assert sum(map(int, requeued)) == len(orphaned), requeued
    finally:
        for service in reversed(services):
            service.stop()
