"""Both job stores, SQLite and PostgreSQL (a real server the tests start), against the same rules.

Claims, leases and their expiry (a replica that died stops renewing; another puts its jobs back in the
queue and runs them), writes guarded by the lease, concurrent claims from two "replicas" (two stores, two
connections) never handing out a job twice. Lease times use an explicit clock, so expiry is exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from deepfake.contracts.schemas import ErrorDetail
from gateway.jobs.open_store import open_job_store
from gateway.jobs.postgres_store import PostgresJobStore
from gateway.jobs.sqlite_store import SqliteJobStore
from gateway.jobs.store import JobRecord, JobStore, JobStoreConfigError, JobStoreUnavailable

StoreFactory = Callable[..., JobStore]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(job_id: str, created_at: float) -> JobRecord:
    return JobRecord(
        id=job_id, state="queued", owner="o", upload_path=f"/u/{job_id}", filename="a.mp4",
        callback_url=None, created_at=created_at, updated_at=created_at,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path) -> StoreFactory:
    """Opens stores ("replicas") on one shared database: `open_store(replica_id, clock, lease_s)`."""
    stores: list[JobStore] = []
    if request.param == "sqlite":
        path = str(tmp_path / "jobs.sqlite")

        def factory(replica: str, clock: Clock, lease_s: float = 10.0) -> JobStore:
            stores.append(SqliteJobStore(path, lease_s, replica, clock))
            return stores[-1]
    else:
        url = request.getfixturevalue("postgres_url")

        def factory(replica: str, clock: Clock, lease_s: float = 10.0) -> JobStore:
            stores.append(PostgresJobStore(url, lease_s, replica, clock))
            return stores[-1]

    yield factory
    for store in stores:
        store.close()


def test_a_claim_is_leased_and_the_lease_holder_alone_records_the_outcome(open_store):
    clock = Clock()
    a, b = open_store("a", clock), open_store("b", clock)
    for i in range(3):
        a.create(record(f"j{i}", created_at=100 + i))
    claimed = a.claim_next()
    assert claimed.id == "j0" and claimed.state == "running" and claimed.attempts == 1
    assert claimed.lease_owner == "a" and claimed.lease_expires_at == clock.now + 10
    assert b.claim_next().id == "j1"  # the next job: j0 is taken
    assert not b.finish("j0", "{}") and not b.fail("j0", ErrorDetail(code="x", message="m"))
    b.set_progress("j0", 0.5)
    assert a.get("j0").progress == 0.0  # b holds no lease on j0: nothing written
    a.set_progress("j0", 0.5)
    assert b.get("j0").progress == 0.5
    assert a.finish("j0", '{"verdict": "real"}')
    done = b.get("j0")
    assert done.state == "succeeded" and done.result_json == '{"verdict": "real"}'
    assert done.upload_path is None and done.lease_owner is None and done.lease_expires_at is None
    assert not a.finish("j0", "{}")  # no longer running
    assert a.count_by_state() == {"succeeded": 1, "running": 1, "queued": 1}
    assert a.upload_paths() == {"/u/j1", "/u/j2"}


def test_a_dead_replicas_jobs_are_released_when_its_lease_ends_and_run_again(open_store):
    clock = Clock()
    dead, alive = open_store("dead", clock), open_store("alive", clock)
    dead.create(record("j", created_at=1))
    assert dead.claim_next().id == "j"
    assert alive.claim_next() is None

    clock.now += 8
    assert dead.renew_leases(["j"]) == 1  # alive: renewed to now + 10
    assert alive.renew_leases(["j"]) == 0  # not alive's job
    clock.now += 9
    assert alive.release_expired() == 0  # 17 s after the claim, but renewed at 8 s
    # "dead" dies now: no more renewals.
    clock.now += 1.5
    assert alive.release_expired() == 1
    released = alive.get("j")
    assert released.state == "queued" and released.progress == 0 and released.lease_owner is None
    again = alive.claim_next()
    assert again.id == "j" and again.attempts == 2 and again.lease_owner == "alive"
    # The dead replica's late writes (had it only stalled) change nothing.
    assert not dead.finish("j", '{"late": true}') and not dead.defer(
        "j", 0, ErrorDetail(code="x", message="m"), 0
    )
    dead.requeue("j")
    assert dead.renew_leases(["j"]) == 0 and dead.renew_leases([]) == 0
    assert alive.get("j").state == "running"
    assert alive.finish("j", "{}") and alive.get("j").state == "succeeded"


def test_only_the_leases_renewed_by_name_hold(open_store):
    clock = Clock()
    store = open_store("a", clock)
    for i in range(3):
        store.create(record(f"j{i}", created_at=i))
    claimed = [store.claim_next().id for _ in range(3)]
    clock.now += 9
    assert store.renew_leases(claimed[:2]) == 2  # j2's worker gave up on it: not renewed
    clock.now += 2
    assert store.release_expired() == 1
    assert [store.get(job).state for job in claimed] == ["running", "running", "queued"]


def test_reopening_keeps_jobs_and_releases_only_expired_leases(open_store):
    clock = Clock()
    first = open_store("first", clock)
    for i in range(3):
        first.create(record(f"j{i}", created_at=100 + i))
    assert first.claim_next().id == "j0"
    assert first.finish("j0", '{"verdict": "real"}')
    assert first.claim_next().id == "j1"  # left running: this "gateway" stops renewing
    first.close()
    reopened = open_store("second", clock)
    assert reopened.get("j0").result_json == '{"verdict": "real"}'
    assert reopened.release_expired() == 0
    clock.now += 11
    assert reopened.release_expired() == 1
    assert reopened.count_by_state() == {"succeeded": 1, "queued": 2}
    again = reopened.claim_next()
    assert again.id == "j1" and again.attempts == 2
    assert reopened.fail("j1", ErrorDetail(code="too_long", message="m"))
    assert reopened.get("j1").error.code == "too_long"
    assert reopened.delete("j2").id == "j2" and reopened.get("j2") is None
    assert not reopened.finish("j2", "{}")  # deleted meanwhile: the result is dropped


def test_a_deferred_job_waits_for_its_time_and_keeps_its_retry_clock(open_store):
    clock = Clock()
    store = open_store("a", clock)
    store.create(record("old", created_at=1))
    store.create(record("new", created_at=2))
    reason = ErrorDetail(code="busy", message="busy")
    assert store.claim_next().id == "old"
    assert store.defer("old", clock.now + 60, reason, retry_since=123.0)
    waiting = store.get("old")
    assert waiting.state == "queued" and waiting.retry_reason == reason and waiting.lease_owner is None
    assert store.claim_next().id == "new"
    assert store.claim_next() is None
    clock.now += 61
    again = store.claim_next()
    assert again.id == "old" and again.attempts == 2 and again.retry_since == 123.0


def test_two_replicas_claiming_at_once_never_get_the_same_job(open_store):
    clock = Clock()
    replicas = [open_store("a", clock), open_store("b", clock)]
    for i in range(200):
        replicas[0].create(record(f"j{i}", created_at=i))
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(store: JobStore) -> None:
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append((job.id, store.replica_id))

    threads = [threading.Thread(target=worker, args=(replicas[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(job for job, _ in claimed) == sorted(f"j{i}" for i in range(200))
    owners = {job.id: job.lease_owner for job in replicas[1].list("o", "running", limit=500)}
    assert owners == dict(claimed)


def test_the_store_url_picks_the_backend(tmp_path, postgres_url):
    sqlite = open_job_store(f"sqlite:///{tmp_path / 'jobs.sqlite'}", 30)
    postgres = open_job_store(postgres_url, 30)
    try:
        assert isinstance(sqlite, SqliteJobStore) and isinstance(postgres, PostgresJobStore)
        assert postgres.lease_s == 30 and sqlite.replica_id != postgres.replica_id
    finally:
        sqlite.close()
        postgres.close()
    with pytest.raises(JobStoreConfigError, match="redis"):
        open_job_store("redis://localhost:6379/0", 30)


def test_an_unreachable_database_is_job_store_unavailable_without_its_address(postgres_server):
    url = postgres_server.new_database()
    store = PostgresJobStore(url, 10)
    # Kill this store's server connection from another session: the next call finds it broken.
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (url.rsplit("/", 1)[1],),
        ).fetchall()
    assert ended == [(True,)]
    with pytest.raises(JobStoreUnavailable) as caught:
        store.get("x")
    detail = caught.value.to_error_detail()
    assert detail.code == "job_store_unavailable" and "127.0.0.1" not in detail.message
    assert store.get("x") is None  # the next call connects again
    store.close()


def test_after_a_failed_connect_calls_fail_at_once_until_the_reconnect_delay(postgres_server):
    url = postgres_server.new_database()
    name = url.rsplit("/", 1)[1]
    store = PostgresJobStore(url, 10, reconnect_delay_s=1.0)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")  # ends the store's connection too
        with pytest.raises(JobStoreUnavailable, match="job store error"):
            store.get("x")  # the broken connection
        with pytest.raises(JobStoreUnavailable, match="cannot connect"):
            store.get("x")  # reconnecting fails: no such database
        admin.execute(f"CREATE DATABASE {name}")
        started = time.monotonic()
        with pytest.raises(JobStoreUnavailable, match="not retried yet"):
            store.get("x")  # the database is back, but the delay has not passed: no connect tried
        assert time.monotonic() - started < 0.5
    time.sleep(1.1)
    with pytest.raises(psycopg.errors.UndefinedTable):
        store.get("x")  # connected again (a fresh, empty database: the table is made at open)
    store.close()
    reopened = PostgresJobStore(url, 10)
    assert reopened.get("x") is None
    reopened.close()


def test_a_postgres_database_of_an_older_gateway_gets_the_lease_columns(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the schema before leases
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL, "
            "upload_path TEXT, filename TEXT, callback_url TEXT, created_at DOUBLE PRECISION NOT NULL, "
            "updated_at DOUBLE PRECISION NOT NULL, progress DOUBLE PRECISION NOT NULL DEFAULT 0, "
            "attempts INTEGER NOT NULL DEFAULT 0, result_json TEXT, error_json TEXT)"
        )
        conn.execute(
            "INSERT INTO jobs (id, state, owner, created_at, updated_at) VALUES ('j', 'running', 'o', 1, 1)"
        )
    store = PostgresJobStore(postgres_url, 10)
    assert store.release_expired() == 1  # running without a lease: left by an older gateway
    assert store.claim_next().lease_owner == store.replica_id
    store.close()


def test_a_postgres_claim_skips_a_row_another_replica_has_locked_instead_of_waiting(postgres_url):
    store = PostgresJobStore(postgres_url, 10)
    store.create(record("j0", created_at=1))
    store.create(record("j1", created_at=2))
    result: list[JobRecord | None] = []
    with psycopg.connect(postgres_url) as other, other.transaction():
        # Another replica is in the middle of claiming j0 (its row lock is held until it commits).
        other.execute("SELECT id FROM jobs WHERE id = 'j0' FOR UPDATE")
        claimer = threading.Thread(target=lambda: result.append(store.claim_next()), daemon=True)
        claimer.start()
        claimer.join(timeout=10)
        assert not claimer.is_alive(), "the claim waited on the locked row"
    assert result[0].id == "j1"
    store.close()


def test_the_gateway_answers_503_while_its_database_is_gone(tmp_path, postgres_server):
    from fastapi.testclient import TestClient

    from cli.local_stack import free_port
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    url = postgres_server.new_database()
    settings = GatewaySettings(
        api_keys="k",
        job_store_url=url,
        upload_dir=tmp_path / "uploads",
        preprocessor_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: no job runs here
        job_poll_s=0.05,
    )
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": "k"}
        assert client.get("/v1/jobs", headers=headers).json() == []
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
        response = client.get("/v1/jobs/abc", headers=headers)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.json()["error"] == {
            "code": "job_store_unavailable",
            "message": "the job store is unavailable; retry later",
            "details": {},
        }
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "gateway_http_requests_total" in metrics.text
        assert "gateway_jobs{" not in metrics.text  # the job gauge needs the store: left out meanwhile
        time.sleep(0.3)  # the workers meet the outage too (poll 0.05 s) and keep waiting, not dying
        assert all(not task.done() for task in client.app.state.runner._tasks)
