"""Which job store DEEPFAKE_JOB_STORE_URL names: SQLite (one machine, the default) or PostgreSQL (replicas).

WHY its own module: the interface (``gateway.jobs.store``) must not import its implementations (they
import it), and only this function needs to know them all. The PostgreSQL driver is imported only when a
postgresql:// URL asks for it.
"""

from __future__ import annotations

from gateway.jobs.store import JobStore, JobStoreConfigError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_job_store(url: str, lease_s: float) -> JobStore:
    """The store for `url`: sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:, or
    postgresql://user:password@host:port/database (any libpq connection URI); `lease_s`: how long a claim
    holds without renewal (gateway.jobs.store)."""
    if url.startswith("sqlite:///"):
        from gateway.jobs.sqlite_store import SqliteJobStore

        return SqliteJobStore(url.removeprefix("sqlite:///"), lease_s)
    if url.startswith(POSTGRES_SCHEMES):
        from gateway.jobs.postgres_store import PostgresJobStore

        return PostgresJobStore(url, lease_s)
    scheme = url.split(":", 1)[0]
    raise JobStoreConfigError(
        f"DEEPFAKE_JOB_STORE_URL scheme {scheme!r} is not supported; use sqlite:///path/jobs.sqlite "
        "(one gateway) or postgresql://user:password@host:5432/database (several replicas)"
    )
