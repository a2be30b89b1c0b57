"""The embedded job store: one SQLite file, WAL mode, safe across threads and gateway restarts.

WHY SQLite: a single gateway needs no database server, and a file on a volume keeps every queued and
finished job across restarts. Each call opens a short transaction on one shared connection under a lock;
the operations are tiny, so the lock is never held for long. The statements are ``gateway.jobs.sql_store``'s
(shared with PostgreSQL); a claim needs no row lock because SQLite runs one writer at a time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.jobs.sql_store import SqlJobStore, added_column_types, schema_sql

DEFAULT_LEASE_S = 30.0


class SqliteJobStore(SqlJobStore):
    def __init__(
        self,
        path: str,
        lease_s: float = DEFAULT_LEASE_S,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(lease_s, replica_id, clock)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in schema_sql("REAL"):
            self._db.execute(statement)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in added_column_types("REAL").items():
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _count(self, sql: str, params: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
