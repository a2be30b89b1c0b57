"""The job store (SQLite), the rate limiter and the upload type sniffing, without any HTTP in between."""

from __future__ import annotations

import threading

import pytest

from deepfake.schemas import ErrorDetail
from deepfake.uploads import safe_display_name, sniff_video_container
from gateway.jobs.sqlite_store import SqliteJobStore
from gateway.jobs.store import JobRecord, JobStoreConfigError, open_job_store
from gateway.rate_limit import RateLimiter
from tests import synth


def record(job_id: str, created_at: float) -> JobRecord:
    return JobRecord(
        id=job_id, state="queued", owner="o", upload_path=f"/u/{job_id}", filename="a.mp4",
        callback_url=None, created_at=created_at, updated_at=created_at,
    )  # fmt: skip


def test_jobs_survive_reopening_and_running_ones_are_requeued(tmp_path):
    path = str(tmp_path / "jobs.sqlite")
    store = SqliteJobStore(path)
    for i in range(3):
        store.create(record(f"j{i}", created_at=100 + i))
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == "j0" and claimed.state == "running" and claimed.attempts == 1
    assert store.finish("j0", '{"verdict": "real"}')
    assert store.claim_next().id == "j1"  # left running: the "gateway" dies now
    store.close()

    reopened = SqliteJobStore(path)
    assert reopened.get("j0").state == "succeeded" and reopened.get("j0").result_json == '{"verdict": "real"}'
    assert reopened.get("j0").upload_path is None
    assert reopened.requeue_running() == 1
    assert reopened.count_by_state() == {"succeeded": 1, "queued": 2}
    again = reopened.claim_next()
    assert again.id == "j1" and again.attempts == 2
    assert reopened.fail("j1", ErrorDetail(code="too_long", message="m"))
    assert reopened.get("j1").error.code == "too_long"
    assert reopened.delete("j2").id == "j2" and reopened.get("j2") is None
    assert not reopened.finish("j2", "{}")  # deleted meanwhile: the result is dropped
    reopened.close()


def test_concurrent_claims_never_hand_out_a_job_twice(tmp_path):
    store = SqliteJobStore(str(tmp_path / "jobs.sqlite"))
    for i in range(200):
        store.create(record(f"j{i}", created_at=i))
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(f"j{i}" for i in range(200))


def test_unknown_store_scheme_is_a_clear_error():
    with pytest.raises(JobStoreConfigError, match="redis"):
        open_job_store("redis://localhost:6379/0")


def test_token_bucket_allows_the_budget_then_says_how_long_to_wait():
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(20.0)  # one token per 20 s
    assert limiter.acquire("other") == 0.0
    now[0] = 20.0
    assert limiter.acquire("k") == 0.0
    assert RateLimiter(per_minute=0).acquire("k") == 0.0  # 0 disables the limit


def test_sniffing_judges_the_bytes_not_the_name(tmp_path, synth_videos, bad_inputs):
    assert sniff_video_container(synth_videos["pan"].path.read_bytes()[:256]) == "mp4"
    assert sniff_video_container(synth_videos["rotation270"].path.read_bytes()[:256]) == "mp4"  # .mov
    mkv = synth.write_zero_frame_video(tmp_path / "z.mkv")
    assert sniff_video_container(mkv.read_bytes()[:256]) == "matroska"
    assert sniff_video_container(bad_inputs["jpeg"].read_bytes()[:256]) is None
    assert sniff_video_container(bad_inputs["not_a_video"].read_bytes()[:256]) is None
    assert sniff_video_container(b"") is None


def test_client_filenames_are_reduced_to_a_safe_display_name():
    assert safe_display_name("../../etc/passwd") == "passwd"
    assert safe_display_name("C:\\\\videos\\\\clip one.mp4") == "clip one.mp4"
    assert safe_display_name("a<b>|c.mp4") == "a_b__c.mp4"
    assert safe_display_name("") is None and safe_display_name(None) is None
