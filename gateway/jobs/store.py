"""The job store interface: what the gateway needs from wherever jobs persist.

WHY an interface: one gateway replica keeps jobs in an embedded SQLite file (nothing to run, survives
restarts); several replicas share a PostgreSQL database. The routers and the job runner only use this
protocol; the implementations are ``gateway.jobs.sqlite_store`` and ``gateway.jobs.postgres_store``, and
``gateway.jobs.open_store.open_job_store`` picks one from ``DEEPFAKE_JOB_STORE_URL``.

The store is also the queue, shared by every replica: a job is claimed atomically (two workers, in one process
or in two replicas, never run the same job) and held under a **lease**: the claiming store writes its replica
id and an expiry ``lease_s`` ahead, and renews it while one of the replica's workers is on the job
(:meth:`JobStore.renew_leases`). A replica that dies (SIGKILL, a lost node) stops renewing; once its leases
have run out any replica puts those jobs back in the queue (:meth:`JobStore.release_expired`) and runs them
again. Every write about a running job (progress, result, failure, re-queue) is made only while this replica
still holds the job's lease, so a replica that lost a job (it stalled past the lease) cannot overwrite what
the replica now running it writes. Leases compare wall-clock times of the replicas, so their clocks must agree
to well under a lease (NTP does).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from deepfake.contracts.errors import ServiceError
from deepfake.contracts.schemas import ErrorDetail, JobState


@dataclass
class JobRecord:
    id: str
    state: JobState
    owner: str  # hash of the API key that created the job; other keys cannot see it
    upload_path: str | None
    filename: str | None
    callback_url: str | None
    created_at: float
    updated_at: float
    progress: float = 0.0
    attempts: int = 0
    result_json: str | None = None
    error: ErrorDetail | None = None
    # Waiting out an unavailable analysis service (gateway.jobs.runner): when the job may run again, the
    # transient failure it waits out, and when the first such failure of this job happened.
    next_attempt_at: float | None = None
    retry_reason: ErrorDetail | None = None
    retry_since: float | None = None
    # The replica running the job and until when its claim holds unless renewed (None unless running).
    lease_owner: str | None = None
    lease_expires_at: float | None = None


class JobStore(Protocol):
    replica_id: str  # this store's name in lease_owner: one per gateway process

    def create(self, job: JobRecord) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def list(self, owner: str, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        """The owner's jobs, newest first (results left out: they can be large)."""
        ...

    def claim_next(self) -> JobRecord | None:
        """Atomically move the oldest queued job that is due (no ``next_attempt_at`` in the future) to
        running (attempts + 1, ``next_attempt_at`` cleared), leased to this replica, and return it."""
        ...

    def renew_leases(self, job_ids: Collection[str]) -> int:
        """Extend the leases of these jobs, which this replica's workers are running, by ``lease_s`` from
        now; how many it still held. Only jobs a worker is on: a job whose worker gave up (the store was
        unreachable) must expire, or it would stay 'running' for as long as the replica lives."""
        ...

    def release_expired(self) -> int:
        """Running jobs whose lease ran out (their replica died) go back to the queue; how many."""
        ...

    def set_progress(self, job_id: str, progress: float) -> None: ...

    def finish(self, job_id: str, result_json: str) -> bool:
        """Mark succeeded with the result; False when the job is gone (deleted meanwhile) or no longer
        this replica's (its lease ran out)."""
        ...

    def fail(self, job_id: str, error: ErrorDetail) -> bool: ...

    def requeue(self, job_id: str) -> None:
        """Put a running job back in the queue at once (the gateway is shutting down)."""
        ...

    def defer(self, job_id: str, next_attempt_at: float, reason: ErrorDetail, retry_since: float) -> bool:
        """Put a running job back in the queue, not to be claimed before `next_attempt_at`: the analysis
        service was unavailable (`reason`), first at `retry_since`. False when the job is gone."""
        ...

    def delete(self, job_id: str) -> JobRecord | None:
        """Remove the job; returns what was removed (so its upload can be deleted) or None."""
        ...

    def upload_paths(self) -> set[str]:
        """The upload files jobs still reference (queued or running ones): never swept as orphans."""
        ...

    def count_by_state(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class JobStoreConfigError(ValueError):
    """DEEPFAKE_JOB_STORE_URL names a store this build cannot open."""


class JobStoreUnavailable(ServiceError):
    """The job store cannot be reached right now (a database restart, a network cut). API requests get
    503 with Retry-After; workers wait and try again, and the jobs they held are re-claimed once their
    leases run out. ``reason`` (for the log) may name the database; the public message names nothing."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "job_store_unavailable", "the job store is unavailable; retry later", headers={"Retry-After": "5"}
        )
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def new_replica_id() -> str:
    """A name unique to this process: the host (the pod's name in Kubernetes), the pid, a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
