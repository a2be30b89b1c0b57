"""The statements the two SQL job stores share (SQLite and PostgreSQL), written once.

WHY one base: the stores differ only in how they connect, how their schema is migrated and how a claim
locks the row it takes (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once each get a
different job without waiting on each other; SQLite: one writer at a time anyway). Everything else (the
columns, what each state change writes, the lease rules of ``gateway.jobs.store``) must be the same, so
it lives here. Statements use ``?`` placeholders; a backend translates them if its driver wants another.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from deepfake.contracts.schemas import ErrorDetail
from gateway.jobs.store import JobRecord, new_replica_id

# (name, type) in table order; "REAL" is a float column (DOUBLE PRECISION in PostgreSQL).
COLUMN_TYPES = (
    ("id", "TEXT PRIMARY KEY"),
    ("state", "TEXT NOT NULL"),
    ("owner", "TEXT NOT NULL"),
    ("upload_path", "TEXT"),
    ("filename", "TEXT"),
    ("callback_url", "TEXT"),
    ("created_at", "REAL NOT NULL"),
    ("updated_at", "REAL NOT NULL"),
    ("progress", "REAL NOT NULL DEFAULT 0"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("result_json", "TEXT"),
    ("error_json", "TEXT"),
    ("next_attempt_at", "REAL"),
    ("retry_json", "TEXT"),
    ("retry_since", "REAL"),
    ("lease_owner", "TEXT"),
    ("lease_expires_at", "REAL"),
)
# Columns added after the first release: a store written by an older gateway gets them at open.
ADDED_COLUMNS = ("next_attempt_at", "retry_json", "retry_since", "lease_owner", "lease_expires_at")
COLUMNS = ", ".join(name for name, _ in COLUMN_TYPES)
PLACEHOLDERS = ", ".join(["?"] * len(COLUMN_TYPES))
# Leaving 'running' in any way ends the lease; finishing a job in any way ends its waiting for a retry.
NO_LEASE = "lease_owner = NULL, lease_expires_at = NULL"
NO_RETRY = "next_attempt_at = NULL, retry_json = NULL, retry_since = NULL"
# A write about a running job holds only while this replica still holds its lease.
HELD = "state = 'running' AND lease_owner = ?"


def schema_sql(real_type: str) -> list[str]:
    """CREATE statements of the jobs table and its index, float columns as `real_type`."""
    columns = ",\n    ".join(f"{name} {kind.replace('REAL', real_type)}" for name, kind in COLUMN_TYPES)
    return [
        f"CREATE TABLE IF NOT EXISTS jobs (\n    {columns}\n)",
        "CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at)",
    ]


def added_column_types(real_type: str) -> dict[str, str]:
    kinds = dict(COLUMN_TYPES)
    return {name: kinds[name].replace("REAL", real_type) for name in ADDED_COLUMNS}


def _record(row: tuple) -> JobRecord:
    error_json, retry_json = row[11], row[13]
    return JobRecord(
        id=row[0],
        state=row[1],
        owner=row[2],
        upload_path=row[3],
        filename=row[4],
        callback_url=row[5],
        created_at=row[6],
        updated_at=row[7],
        progress=row[8],
        attempts=row[9],
        result_json=row[10],
        error=ErrorDetail.model_validate_json(error_json) if error_json else None,
        next_attempt_at=row[12],
        retry_reason=ErrorDetail.model_validate_json(retry_json) if retry_json else None,
        retry_since=row[14],
        lease_owner=row[15],
        lease_expires_at=row[16],
    )


class SqlJobStore:
    """The JobStore operations over three primitives a backend provides: `_one`, `_all`, `_count`."""

    # What a claim adds to the SELECT that picks the row it takes (the backend's row lock, if any).
    claim_lock = ""

    def __init__(self, lease_s: float, replica_id: str | None, clock: Callable[[], float]) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.lease_s = lease_s
        self.replica_id = replica_id or new_replica_id()
        self._clock = clock

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        raise NotImplementedError

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _count(self, sql: str, params: tuple = ()) -> int:
        """Run a write; the number of rows it changed."""
        raise NotImplementedError

    def create(self, job: JobRecord) -> None:
        self._count(
            f"INSERT INTO jobs ({COLUMNS}) VALUES ({PLACEHOLDERS})",
            (
                job.id,
                job.state,
                job.owner,
                job.upload_path,
                job.filename,
                job.callback_url,
                job.created_at,
                job.updated_at,
                job.progress,
                job.attempts,
                job.result_json,
                job.error.model_dump_json() if job.error else None,
                job.next_attempt_at,
                job.retry_reason.model_dump_json() if job.retry_reason else None,
                job.retry_since,
                job.lease_owner,
                job.lease_expires_at,
            ),
        )

    def get(self, job_id: str) -> JobRecord | None:
        row = self._one(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _record(row) if row else None

    def list(self, owner: str, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        columns = COLUMNS.replace("result_json", "NULL")
        sql = f"SELECT {columns} FROM jobs WHERE owner = ?"
        params: tuple = (owner,)
        if state is not None:
            sql += " AND state = ?"
            params += (state,)
        rows = self._all(sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [_record(row) for row in rows]

    def claim_next(self) -> JobRecord | None:
        # One statement: the subquery and the update are atomic, so concurrent workers (threads, processes
        # sharing a file, replicas sharing a database) never claim the same job. A job waiting to be
        # retried is skipped until its time comes.
        now = self._clock()
        row = self._one(
            f"""UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?,
                    next_attempt_at = NULL, lease_owner = ?, lease_expires_at = ?
                WHERE id = (SELECT id FROM jobs WHERE state = 'queued'
                              AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                            ORDER BY created_at LIMIT 1 {self.claim_lock})
                  AND state = 'queued'
                RETURNING {COLUMNS}""",
            (now, self.replica_id, now + self.lease_s, now),
        )
        return _record(row) if row else None

    def renew_leases(self, job_ids: Collection[str]) -> int:
        if not job_ids:
            return 0
        placeholders = ", ".join("?" * len(job_ids))
        return self._count(
            f"UPDATE jobs SET lease_expires_at = ? WHERE {HELD} AND id IN ({placeholders})",
            (self._clock() + self.lease_s, self.replica_id, *job_ids),
        )

    def release_expired(self) -> int:
        # A running row without a lease was left by a gateway older than leases: released too.
        now = self._clock()
        return self._count(
            f"""UPDATE jobs SET state = 'queued', progress = 0, updated_at = ?, {NO_LEASE}
                WHERE id IN (SELECT id FROM jobs WHERE state = 'running'
                               AND (lease_expires_at IS NULL OR lease_expires_at < ?) {self.claim_lock})
                  AND state = 'running'""",
            (now, now),
        )

    def set_progress(self, job_id: str, progress: float) -> None:
        self._count(
            f"UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND {HELD}",
            (progress, self._clock(), job_id, self.replica_id),
        )

    def finish(self, job_id: str, result_json: str) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'succeeded', progress = 1, result_json = ?, updated_at = ?, "
            f"upload_path = NULL, {NO_RETRY}, {NO_LEASE} WHERE id = ? AND {HELD}",
            (result_json, self._clock(), job_id, self.replica_id),
        )

    def fail(self, job_id: str, error: ErrorDetail) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'failed', error_json = ?, updated_at = ?, upload_path = NULL, "
            f"{NO_RETRY}, {NO_LEASE} WHERE id = ? AND {HELD}",
            (error.model_dump_json(), self._clock(), job_id, self.replica_id),
        )

    def requeue(self, job_id: str) -> None:
        self._count(
            f"UPDATE jobs SET state = 'queued', progress = 0, updated_at = ?, {NO_LEASE} "
            f"WHERE id = ? AND {HELD}",
            (self._clock(), job_id, self.replica_id),
        )

    def defer(self, job_id: str, next_attempt_at: float, reason: ErrorDetail, retry_since: float) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'queued', progress = 0, updated_at = ?, next_attempt_at = ?, "
            f"retry_json = ?, retry_since = ?, {NO_LEASE} WHERE id = ? AND {HELD}",
            (
                self._clock(),
                next_attempt_at,
                reason.model_dump_json(),
                retry_since,
                job_id,
                self.replica_id,
            ),
        )

    def delete(self, job_id: str) -> JobRecord | None:
        row = self._one(f"DELETE FROM jobs WHERE id = ? RETURNING {COLUMNS}", (job_id,))
        return _record(row) if row else None

    def upload_paths(self) -> set[str]:
        # finish() and fail() clear upload_path, so every path still set belongs to a live job.
        return {row[0] for row in self._all("SELECT upload_path FROM jobs WHERE upload_path IS NOT NULL")}

    def count_by_state(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: count for state, count in rows}
