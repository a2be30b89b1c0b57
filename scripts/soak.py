"""`make soak`: load and fault drills against the real stack on loopback (issue 10).

Starts Triton, the preprocessor and the gateway as processes (cli.local_stack, the same way as
`make up` and the integration tests; a random-weight model with the deployed contract, so the figures are
the serving path's, not a model's), then runs one phase after another and prints one JSON line per phase:

- load: SOAK_JOBS job uploads (50) and SOAK_SYNC synchronous detections (20), all at once;
- kill-gateway / kill-preprocessor / kill-triton: a batch of jobs submitted, the service SIGKILLed (its
  process group) while jobs run, then started again;
- outage-preprocessor / outage-triton: the service stopped for OUTAGE_S (30) seconds while jobs wait.

For each phase: jobs submitted, succeeded, failed, lost (not finished within the phase's timeout, or gone),
5xx answers (a 503 with Retry-After is counted apart: it is the documented "busy, retry" answer), and the
wall time. The run passes (exit 0) when every job of every phase succeeded and no 5xx other than 503 +
Retry-After was seen. Logs of the services: <run dir>/logs/.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports

from cli.local_stack import LocalStack, Ports
from tests import synth
from tests.integration.conftest import write_test_repository
from tests.random_model import default_test_meta

FINAL = ("succeeded", "failed")


@dataclass
class Tally:
    """What one phase saw."""

    phase: str
    jobs: int = 0
    succeeded: int = 0
    failed: list[str] = field(default_factory=list)  # error codes
    lost: int = 0
    sync: dict[str, int] = field(default_factory=dict)  # status code -> count
    busy_with_retry_after: int = 0
    server_errors: list[str] = field(default_factory=list)  # 5xx other than 503 + Retry-After
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, response: httpx.Response, what: str) -> None:
        with self._lock:
            if response.status_code == 503 and "retry-after" in response.headers:
                self.busy_with_retry_after += 1
            elif response.status_code >= 500:
                self.server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")

    def report(self) -> dict:
        fields = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return {**fields, "ok": self.ok()}

    def ok(self) -> bool:
        return self.succeeded == self.jobs and not self.failed and not self.lost and not self.server_errors


def upload(client: httpx.Client, path: str, video: Path) -> httpx.Response:
    with video.open("rb") as handle:
        return client.post(path, files={"file": (video.name, handle, "video/mp4")})


def submit(client: httpx.Client, videos: list[Path], tally: Tally, concurrency: int) -> list[str]:
    def one(video: Path) -> str | None:
        response = upload(client, "/v1/jobs", video)
        tally.note(response, "POST /v1/jobs")
        return response.json()["id"] if response.status_code == 202 else None

    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(one, videos))
    tally.jobs += len(ids)
    tally.lost += sum(job_id is None for job_id in ids)  # never accepted
    return [job_id for job_id in ids if job_id is not None]


def wait_for(client: httpx.Client, ids: list[str], tally: Tally, timeout_s: float) -> None:
    """Poll until every job is final (gateway restarts in between are ridden out); tally the outcomes."""
    pending, deadline = set(ids), time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            try:
                response = client.get(f"/v1/jobs/{job_id}")
            except httpx.TransportError:
                break  # the gateway is restarting
            tally.note(response, "GET /v1/jobs/{id}")
            if response.status_code == 404:
                pending.discard(job_id)
                tally.lost += 1
            elif response.status_code == 200 and response.json()["state"] in FINAL:
                pending.discard(job_id)
                status = response.json()
                if status["state"] == "succeeded":
                    tally.succeeded += 1
                else:
                    tally.failed.append(status["error"]["code"])
        time.sleep(0.5)
    tally.lost += len(pending)


def wait_running(client: httpx.Client, ids: list[str], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(client.get(f"/v1/jobs/{job_id}").json()["state"] == "running" for job_id in ids):
            return True
        time.sleep(0.05)
    return False


def load_phase(client: httpx.Client, videos: list[Path], args: argparse.Namespace) -> Tally:
    tally = Tally("load")
    start = time.monotonic()

    def sync(video: Path) -> int:
        response = upload(client, "/v1/detections", video)
        tally.note(response, "POST /v1/detections")
        return response.status_code

    def all_sync() -> list[int]:
        with ThreadPoolExecutor(args.sync) as pool:
            return list(pool.map(sync, [videos[i % len(videos)] for i in range(args.sync)]))

    job_videos = [videos[i % len(videos)] for i in range(args.jobs)]
    with ThreadPoolExecutor(2) as pool:
        jobs = pool.submit(submit, client, job_videos, tally, args.jobs)
        syncs = pool.submit(all_sync)
        ids = jobs.result()
        for status in syncs.result():
            tally.sync[str(status)] = tally.sync.get(str(status), 0) + 1
    wait_for(client, ids, tally, args.timeout)
    tally.wall_s = round(time.monotonic() - start, 1)
    return tally


def drill(
    stack: LocalStack,
    client: httpx.Client,
    videos: list[Path],
    service: str,
    kill: bool,
    args: argparse.Namespace,
) -> Tally:
    tally = Tally(f"{'kill' if kill else 'outage'}-{service}")
    start = time.monotonic()
    ids = submit(client, [videos[i % len(videos)] for i in range(args.batch)], tally, args.batch)
    if not wait_running(client, ids):
        tally.server_errors.append("no job was running when the drill began")
    if kill:
        stack.kill(service)
    else:
        stack.stop(service)
        time.sleep(args.outage_s)
    stack.start(service)
    stack.wait_ready(service)
    wait_for(client, ids, tally, args.timeout)
    tally.wall_s = round(time.monotonic() - start, 1)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--sync", type=int, default=20)
    parser.add_argument("--batch", type=int, default=6, help="jobs per fault drill")
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for a phase's jobs")
    parser.add_argument("--phases", nargs="*", help="load kill-gateway kill-preprocessor kill-triton "
                        "outage-preprocessor outage-triton (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="deepfake-soak-"))
    repository = work / "model_repository"
    write_test_repository(repository, default_test_meta())
    videos = [
        synth.write_face_video(work / f"v{i}.mp4", n_frames=30, width=320, height=180, motion=motion).path
        for i, motion in enumerate(("pan", "zoom", "rotate"))
    ]
    api_key = secrets.token_urlsafe(16)
    stack = LocalStack(
        run_dir=work / "stack",
        repository=repository,
        ports=Ports.free(),
        api_key=api_key,
        env={
            "DEEPFAKE_WORKERS": "2",
            "DEEPFAKE_THREADS": "1",
            "DEEPFAKE_JOB_WORKERS": "4",
            "DEEPFAKE_RATE_LIMIT_PER_MINUTE": "0",
            "DEEPFAKE_JOB_LEASE_S": "6",  # a killed gateway's jobs are released within seconds
            "DEEPFAKE_JOB_RETRY_BACKOFF_MAX_S": "5",  # jobs notice a recovery within seconds
        },
    )
    phases = args.phases or [
        "load", "kill-gateway", "kill-preprocessor", "kill-triton", "outage-preprocessor", "outage-triton",
    ]  # fmt: skip
    tallies = []
    try:
        stack.up(timeout_s=180)
        with httpx.Client(
            base_url=stack.urls["gateway"], headers={"X-API-Key": api_key}, timeout=600
        ) as client:
            for phase in phases:
                if phase == "load":
                    tally = load_phase(client, videos, args)
                else:
                    kind, service = phase.split("-", 1)
                    tally = drill(stack, client, videos, service, kind == "kill", args)
                tallies.append(tally)
                print(json.dumps(tally.report()), flush=True)
    finally:
        stack.down()
    print(f"logs: {stack.run_dir / 'logs'}")
    return 0 if tallies and all(t.ok() for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
