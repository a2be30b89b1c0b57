"""Job workers: take queued jobs from the store, send them to the preprocessor, record the outcome.

WHY the store is the queue: a job exists only as a row, so a gateway that stops (crash, deploy) loses
nothing: at the next start the rows left 'running' are queued again, and their uploads are still on disk.
Workers are a fixed number of asyncio tasks (`job_workers`), so load on the preprocessor is bounded by
configuration, not by how many clients submit.

A job whose analysis fails for the service's reasons (preprocessor unreachable or restarting, busy, not
ready, Triton unavailable, a timeout: ``PreprocessorError.transient``) is not failed: it goes back to the
queue with a ``next_attempt_at`` (exponential backoff with jitter, ``deepfake.retry``) that no worker claims
before, so a waiting job holds no worker. Its status shows the wait (``next_attempt_at``, ``retry_reason``,
``attempts``). Retries last ``job_retry_budget_s`` from the job's first such failure (default 300 s: a
rolling restart of the preprocessor or Triton); then the job fails with ``retries_exhausted``. Failures
of the request itself (4xx: not a video, too long, ...) and the service's own errors (500) fail at once:
retrying cannot change them.

Several replicas may share one store (PostgreSQL): each job a worker claims is leased to this replica, and a
timer renews the leases of the jobs its workers are on every third of ``job_lease_s`` and puts back in the
queue the running jobs whose lease ran out (their replica died: killed, its node lost), so a surviving replica
runs them again (gateway.jobs.store). A result or failure is recorded only while this replica still holds the
job; the upload file is removed only by the replica that recorded the outcome, or when the job is gone. While
the store itself is unreachable, workers wait a poll interval and try again.

The runner also sweeps the upload folder (at start and every ``upload_sweep_interval_s``): upload files
no job references and older than ``upload_orphan_age_s`` are what a crash left behind (a request cut off
between receiving and queueing, a synchronous analysis interrupted) and are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from deepfake.contracts.schemas import ErrorDetail, JobStatus
from deepfake.retry import Backoff
from deepfake.uploads import remove_quietly, sweep_orphan_uploads
from gateway.callbacks import CallbackPolicy, CallbackSender
from gateway.evidence import EvidenceStore
from gateway.jobs.store import JobRecord, JobStore, JobStoreUnavailable
from gateway.metrics import GatewayMetrics
from gateway.preprocessor_client import PreprocessorClient, PreprocessorError
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
RETRIES_EXHAUSTED = "retries_exhausted"


def job_url(base_url: str, job_id: str) -> str:
    """The job's status URL under ``base_url`` (the gateway's public base, e.g. https://detector.example);
    an empty base gives the path alone."""
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}"


def utc(unix_time: float) -> datetime:
    return datetime.fromtimestamp(unix_time, UTC)


def job_status(job: JobRecord, base_url: str = "") -> JobStatus:
    """The public status of ``job``; URLs under ``base_url`` (see :func:`job_url`), times as UTC datetimes
    (the store keeps Unix times)."""
    return JobStatus(
        id=job.id,
        state=job.state,
        progress=round(job.progress, 4),
        filename=job.filename,
        created_at=utc(job.created_at),
        updated_at=utc(job.updated_at),
        attempts=job.attempts,
        callback_url=job.callback_url,
        error=job.error,
        result_url=f"{job_url(base_url, job.id)}/result" if job.state == "succeeded" else None,
        next_attempt_at=utc(job.next_attempt_at) if job.state == "queued" and job.next_attempt_at else None,
        retry_reason=job.retry_reason if job.state in ("queued", "running") else None,
    )


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        client: PreprocessorClient,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        callback_policy: CallbackPolicy,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        evidence: EvidenceStore | None = None,
    ) -> None:
        self.store = store
        self.evidence = evidence or EvidenceStore(settings.evidence_root())
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.backoff = Backoff(settings.job_retry_backoff_s, settings.job_retry_backoff_max_s)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # jobs a worker of this replica is on: their leases are renewed
        self._sender = CallbackSender(
            callback_policy,
            settings.callback_timeout_s,
            settings.callback_attempts,
            transport=callback_transport,
        )

    async def start(self) -> None:
        await self.keep_leases()
        await self.sweep_uploads()
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.settings.job_workers)]
        self._tasks.append(asyncio.create_task(self._sweep_periodically()))
        self._tasks.append(asyncio.create_task(self._keep_leases_periodically()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._callbacks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._sender.aclose()

    async def sweep_uploads(self) -> list[Path]:
        """Delete orphaned upload files (referenced by no job, older than upload_orphan_age_s), and
        evidence folders of jobs that no longer exist (same age)."""

        def sweep() -> list[Path]:
            keep = self.store.upload_paths()
            age = self.settings.upload_orphan_age_s
            gone = self.evidence.sweep(lambda job_id: self.store.get(job_id) is not None, age)
            if gone:
                log.info("removed evidence of %d job(s) that no longer exist", len(gone))
            return sweep_orphan_uploads(self.settings.upload_dir, age, keep)

        try:
            removed = await asyncio.to_thread(sweep)
        except (OSError, JobStoreUnavailable) as exc:  # must not stop the gateway; the next sweep retries
            log.warning("upload sweep of %s failed: %s", self.settings.upload_dir, exc)
            return []
        if removed:
            log.info(
                "removed %d orphaned upload file(s) older than %g s from %s",
                len(removed),
                self.settings.upload_orphan_age_s,
                self.settings.upload_dir,
            )
        return removed

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.upload_sweep_interval_s)
            await self.sweep_uploads()

    async def keep_leases(self) -> None:
        """Renew this replica's leases; re-queue the jobs of replicas whose leases ran out."""
        try:
            await asyncio.to_thread(self.store.renew_leases, list(self._running))
            released = await asyncio.to_thread(self.store.release_expired)
        except JobStoreUnavailable as exc:
            log.warning("job leases not renewed: %s", exc)
            return
        if released:
            log.warning("re-queued %d job(s) whose gateway replica stopped renewing their lease", released)

    async def _keep_leases_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_lease_s / 3)
            await self.keep_leases()

    def notify(self) -> None:
        """A job was queued: wake an idle worker now instead of at the next poll."""
        self._wake.set()

    async def _worker(self, index: int) -> None:
        while True:
            try:
                job = await asyncio.to_thread(self.store.claim_next)
            except JobStoreUnavailable as exc:
                log.warning("worker %d: %s; trying again in %g s", index, exc, self.settings.job_poll_s)
                await asyncio.sleep(self.settings.job_poll_s)
                continue
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.job_poll_s)
                continue
            self._running.add(job.id)
            try:
                await self._run(job)
            except asyncio.CancelledError:
                # Shutting down mid-analysis: the job goes back to the queue for the next start (or, with
                # the store unreachable, once its lease runs out).
                with contextlib.suppress(JobStoreUnavailable):
                    self.store.requeue(job.id)
                raise
            except JobStoreUnavailable as exc:
                log.warning("job %s: %s; it runs again once its lease runs out", job.id, exc)
            except Exception:
                log.exception("job %s: unexpected failure", job.id)
                with contextlib.suppress(JobStoreUnavailable):  # then it runs again once its lease ends
                    self._fail(
                        job, ErrorDetail(code="internal_error", message="internal error; the job was logged")
                    )
            finally:
                self._running.discard(job.id)

    async def _run(self, job: JobRecord) -> None:
        path = Path(job.upload_path) if job.upload_path else None
        if path is None or not path.exists():
            self._fail(
                job, ErrorDetail(code="upload_missing", message="the uploaded file is gone; submit again")
            )
            return
        last = [0.0]

        def progress(fraction: float) -> None:
            if fraction - last[0] >= 0.05 or fraction >= 1.0:
                last[0] = fraction
                self.store.set_progress(job.id, fraction)

        start = time.perf_counter()
        try:
            result = await self.client.request_analysis(path, job.filename, progress, evidence=True)
        except PreprocessorError as exc:
            if exc.transient:
                self._retry_later(job, exc.to_error_detail())
            else:
                self._fail(job, exc.to_error_detail())
            return
        result_json = await asyncio.to_thread(self.evidence.keep, job.id, result)
        recorded = self.store.finish(job.id, result_json)
        if recorded:
            self.metrics.jobs_finished.labels("succeeded").inc()
            self.metrics.job_seconds.observe(time.perf_counter() - start)
            self._done(job)
        if self._release_upload(job, recorded):  # deleted while it ran: its evidence goes too
            self.evidence.delete(job.id)

    def _retry_later(self, job: JobRecord, reason: ErrorDetail) -> None:
        """Back to the queue, due after a backoff, while the retry budget lasts; else fail the job."""
        now = time.time()
        since = job.retry_since if job.retry_since is not None else now
        budget = self.settings.job_retry_budget_s
        left = since + budget - now
        if left <= 0:
            waited = now - since
            self._fail(
                job,
                ErrorDetail(
                    code=RETRIES_EXHAUSTED,
                    message=f"the analysis service stayed unavailable for {waited:.0f} s over "
                    f"{job.attempts} attempt(s) (last: {reason.message}); submit the video again later",
                    details={
                        "last_error": reason.model_dump(mode="json"),
                        "attempts": job.attempts,
                        "retry_budget_s": budget,
                    },
                ),
            )
            return
        # The last try comes when the budget ends, so an outage just under it still finishes the job.
        delay = min(self.backoff.delay(job.attempts), left)
        if self.store.defer(job.id, now + delay, reason, since):
            self.metrics.job_retries.labels(reason.code).inc()
            log.warning(
                "job %s: %s (attempt %d), retried in %.1f s (%.0f s of the %.0f s retry budget left)",
                job.id, reason.code, job.attempts, delay, left, budget,
            )  # fmt: skip

    def _fail(self, job: JobRecord, error: ErrorDetail) -> None:
        log.info("job %s failed: %s: %s", job.id, error.code, error.message)
        recorded = self.store.fail(job.id, error)
        if recorded:
            self.metrics.jobs_finished.labels("failed").inc()
            self._done(job)
        self._release_upload(job, recorded)

    def _release_upload(self, job: JobRecord, recorded: bool) -> bool:
        """Remove the job's upload once its outcome is recorded, or when the job was deleted; keep it
        when another replica took the job over (this one lost its lease): that one still reads it.
        Returns whether the job was deleted while it ran (one store read, only when not recorded)."""
        deleted = False
        if not recorded:
            if self.store.get(job.id) is not None:
                log.warning("job %s: its lease ran out (it runs again); this outcome is dropped", job.id)
                return False
            deleted = True
        remove_quietly(Path(job.upload_path) if job.upload_path else None)
        return deleted

    def _done(self, job: JobRecord) -> None:
        if job.callback_url:
            task = asyncio.create_task(self._callback(job.id, job.callback_url))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _callback(self, job_id: str, url: str) -> None:
        """POST the final JobStatus, signed, to the client's callback URL (gateway.callbacks)."""
        job = self.store.get(job_id)
        if job is None:
            return
        secret = self.settings.callback_secret_for(job.owner)
        if secret is None:  # the secret was removed after the job was accepted
            log.warning("job %s: no callback secret configured, callback not sent", job_id)
            outcome = "refused"
        else:
            body = job_status(job, self.settings.public_url).model_dump(mode="json")
            outcome = await self._sender.deliver(url, body, secret, job_id)
        self.metrics.callbacks.labels(outcome).inc()
