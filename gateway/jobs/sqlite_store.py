"""The embedded job store: one SQLite file, WAL mode, safe across threads and gateway restarts.

WHY SQLite: a single gateway needs no database server, and a file on a volume keeps every queued and
finished job across restarts. Each call opens a short transaction on one shared connection under a lock;
the operations are tiny, so the lock is never held for long.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from deepfake.schemas import ErrorDetail
from gateway.jobs.store import JobRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    upload_path TEXT,
    filename TEXT,
    callback_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result_json TEXT,
    error_json TEXT,
    next_attempt_at REAL,
    retry_json TEXT,
    retry_since REAL
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at);
"""
# Columns added after the first release: a store file written by an older gateway gets them at open.
ADDED_COLUMNS = {"next_attempt_at": "REAL", "retry_json": "TEXT", "retry_since": "REAL"}
COLUMNS = (
    "id, state, owner, upload_path, filename, callback_url, created_at, updated_at, progress, attempts, "
    "result_json, error_json, next_attempt_at, retry_json, retry_since"
)
PLACEHOLDERS = ", ".join(["?"] * len(COLUMNS.split(",")))
# Finishing a job in any way ends its waiting for a retry.
NO_RETRY = "next_attempt_at = NULL, retry_json = NULL, retry_since = NULL"


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
    )


class SqliteJobStore:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _count(self, sql: str, params: tuple = ()) -> int:
        """Run a write; the number of rows it changed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

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
        # One statement: the subquery and the update are atomic, so concurrent workers (threads or
        # processes sharing the file) never claim the same job. A job waiting to be retried is skipped
        # until its time comes.
        now = time.time()
        row = self._one(
            f"""UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?,
                    next_attempt_at = NULL
                WHERE id = (SELECT id FROM jobs WHERE state = 'queued'
                              AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                            ORDER BY created_at LIMIT 1)
                  AND state = 'queued'
                RETURNING {COLUMNS}""",
            (now, now),
        )
        return _record(row) if row else None

    def set_progress(self, job_id: str, progress: float) -> None:
        self._count(
            "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND state = 'running'",
            (progress, time.time(), job_id),
        )

    def finish(self, job_id: str, result_json: str) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'succeeded', progress = 1, result_json = ?, updated_at = ?, "
            f"upload_path = NULL, {NO_RETRY} WHERE id = ?",
            (result_json, time.time(), job_id),
        )

    def fail(self, job_id: str, error: ErrorDetail) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'failed', error_json = ?, updated_at = ?, upload_path = NULL, "
            f"{NO_RETRY} WHERE id = ?",
            (error.model_dump_json(), time.time(), job_id),
        )

    def requeue(self, job_id: str) -> None:
        self._count(
            "UPDATE jobs SET state = 'queued', progress = 0, updated_at = ? "
            "WHERE id = ? AND state = 'running'",
            (time.time(), job_id),
        )

    def defer(self, job_id: str, next_attempt_at: float, reason: ErrorDetail, retry_since: float) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'queued', progress = 0, updated_at = ?, next_attempt_at = ?, "
            "retry_json = ?, retry_since = ? WHERE id = ? AND state = 'running'",
            (time.time(), next_attempt_at, reason.model_dump_json(), retry_since, job_id),
        )

    def delete(self, job_id: str) -> JobRecord | None:
        row = self._one(f"DELETE FROM jobs WHERE id = ? RETURNING {COLUMNS}", (job_id,))
        return _record(row) if row else None

    def requeue_running(self) -> int:
        return self._count(
            "UPDATE jobs SET state = 'queued', progress = 0, updated_at = ? WHERE state = 'running'",
            (time.time(),),
        )

    def upload_paths(self) -> set[str]:
        # finish() and fail() clear upload_path, so every path still set belongs to a live job.
        return {row[0] for row in self._all("SELECT upload_path FROM jobs WHERE upload_path IS NOT NULL")}

    def count_by_state(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: count for state, count in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
