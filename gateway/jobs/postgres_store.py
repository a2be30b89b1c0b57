"""The shared job store: one PostgreSQL database that every gateway replica uses.

WHY PostgreSQL: replicas behind one Service must see one job list (a job created on one replica is
polled on another) and share one queue. A claim is ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
LOCKED)``: replicas claiming at the same moment each lock a different row instead of queueing behind one,
and the lease rules (``gateway.jobs.store``) let a surviving replica take over the jobs of one that died.

One connection per store (per gateway process) in autocommit mode: every operation is one statement, so
each is its own transaction, and a lock serialises the threads of the process on it. A broken connection
(the database restarted, the network cut) raises ``JobStoreUnavailable`` and is opened again on the next
call. The routers and the job runner call the store from the event loop, so no call may hang: connecting
gives up after ``CONNECT_TIMEOUT_S``, a statement after ``STATEMENT_TIMEOUT_MS`` (server side), unanswered
packets on a dead peer after ``TCP_USER_TIMEOUT_MS`` (kernel side), and after a failed connect the next
``reconnect_delay_s`` fail at once instead of each waiting for another connect to time out. The schema is
created (and migrated) at open under an advisory lock, so replicas starting together do not race on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from gateway.jobs.sql_store import SqlJobStore, added_column_types, schema_sql
from gateway.jobs.store import JobStoreUnavailable

# Any constant: the advisory lock key the schema migration holds (one migration at a time).
SCHEMA_LOCK_KEY = 0x6A6F6273  # "jobs"
CONNECT_TIMEOUT_S = 2
STATEMENT_TIMEOUT_MS = 5000
TCP_USER_TIMEOUT_MS = 5000
RECONNECT_DELAY_S = 5.0


def _translate(sql: str) -> str:
    """psycopg's placeholder is %s; the shared statements use ? (and contain no literal % or ?)."""
    return sql.replace("?", "%s")


class PostgresJobStore(SqlJobStore):
    claim_lock = "FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        lease_s: float,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.time,
        reconnect_delay_s: float = RECONNECT_DELAY_S,
    ) -> None:
        super().__init__(lease_s, replica_id, clock)
        self._url = url
        self._reconnect_delay_s = reconnect_delay_s
        self._no_connect_until = 0.0  # time.monotonic() before which no connect is tried
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                for statement in schema_sql("DOUBLE PRECISION"):
                    conn.execute(statement)
                for name, kind in added_column_types("DOUBLE PRECISION").items():
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN IF NOT EXISTS {name} {kind}")

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            if time.monotonic() < self._no_connect_until:
                raise JobStoreUnavailable("the job store could not be reached a moment ago; not retried yet")
            try:
                self._conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                    tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                )
            except psycopg.OperationalError as exc:
                self._no_connect_until = time.monotonic() + self._reconnect_delay_s
                raise JobStoreUnavailable(f"cannot connect to the job store: {exc}") from exc
        return self._conn

    def _execute(self, sql: str, params: tuple, fetch: Callable[[psycopg.Cursor], object]) -> object:
        with self._lock:
            try:
                cursor = self._connection().execute(_translate(sql), params)
                return fetch(cursor)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._conn is not None:
                    self._conn.close()  # opened again on the next call
                raise JobStoreUnavailable(f"job store error: {exc}") from exc

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self._execute(sql, params, lambda cursor: cursor.fetchone())  # type: ignore[return-value]

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._execute(sql, params, lambda cursor: cursor.fetchall())  # type: ignore[return-value]

    def _count(self, sql: str, params: tuple = ()) -> int:
        return self._execute(sql, params, lambda cursor: cursor.rowcount)  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
