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
    error_json TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at);
"""
COLUMNS = (
    "id, state, owner, upload_path, filename, callback_url, created_at, updated_at, progress, attempts, "
    "result_json, error_json"
)


def _record(row: tuple) -> JobRecord:
    error_json = row[11]
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
            f"INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        # processes sharing the file) never claim the same job.
        row = self._one(
            f"""UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?
                WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1)
                  AND state = 'queued'
                RETURNING {COLUMNS}""",
            (time.time(),),
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
            "upload_path = NULL WHERE id = ?",
            (result_json, time.time(), job_id),
        )

    def fail(self, job_id: str, error: ErrorDetail) -> bool:
        return 0 < self._count(
            "UPDATE jobs SET state = 'failed', error_json = ?, updated_at = ?, upload_path = NULL "
            "WHERE id = ?",
            (error.model_dump_json(), time.time(), job_id),
        )

    def requeue(self, job_id: str) -> None:
        self._count(
            "UPDATE jobs SET state = 'queued', progress = 0, updated_at = ? "
            "WHERE id = ? AND state = 'running'",
            (time.time(), job_id),
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
