"""The job store interface: what the gateway needs from wherever jobs persist.

WHY an interface: one gateway replica keeps jobs in an embedded SQLite file (nothing to run, survives
restarts); several replicas need a shared store (Redis, PostgreSQL). The routers and the job runner only
use this protocol, so adding a shared store is one new class plus a URL scheme in :func:`open_job_store`.
The store is also the queue: a job is claimed atomically, so two workers never run the same job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from deepfake.schemas import ErrorDetail, JobState


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


class JobStore(Protocol):
    def create(self, job: JobRecord) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def list(self, owner: str, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        """The owner's jobs, newest first (results left out: they can be large)."""
        ...

    def claim_next(self) -> JobRecord | None:
        """Atomically move the oldest queued job that is due (no ``next_attempt_at`` in the future) to
        running (attempts + 1, ``next_attempt_at`` cleared) and return it."""
        ...

    def set_progress(self, job_id: str, progress: float) -> None: ...

    def finish(self, job_id: str, result_json: str) -> bool:
        """Mark succeeded with the result; False when the job no longer exists (deleted meanwhile)."""
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

    def requeue_running(self) -> int:
        """At startup: jobs left 'running' by a stopped gateway go back to 'queued'; returns how many."""
        ...

    def upload_paths(self) -> set[str]:
        """The upload files jobs still reference (queued or running ones): never swept as orphans."""
        ...

    def count_by_state(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class JobStoreConfigError(ValueError):
    """DEEPFAKE_JOB_STORE_URL names a store this build cannot open."""


def open_job_store(url: str) -> JobStore:
    """The store for `url`: sqlite:///relative/path, sqlite:////absolute/path or sqlite:///:memory:."""
    if url.startswith("sqlite:///"):
        from gateway.jobs.sqlite_store import SqliteJobStore

        return SqliteJobStore(url.removeprefix("sqlite:///"))
    scheme = url.split(":", 1)[0]
    raise JobStoreConfigError(
        f"DEEPFAKE_JOB_STORE_URL scheme {scheme!r} is not supported by this build; "
        "use sqlite:///path/jobs.sqlite (shared stores such as Redis or PostgreSQL plug in "
        "behind gateway.jobs.store.JobStore)"
    )
