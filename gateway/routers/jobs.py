"""Asynchronous jobs: submit (202 + Location), poll status with progress, fetch the result, its evidence
images and its HTML report, delete.

What a route needs comes in as typed dependencies (gateway.dependencies). The job store (SQLite or
PostgreSQL) and the evidence files are blocking I/O: the routes that only read or delete are plain
``def`` (FastAPI runs them on its thread pool), and the one ``async def`` (it streams the upload) hands
its store write to a thread.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse

from deepfake.api_errors import (
    AUTH_ERRORS,
    CALLBACK_ERRORS,
    JOB_RESULT_ERRORS,
    PIPELINE_ONLY_ERRORS,
    UPLOAD_ERRORS,
    ApiError,
    error_responses_doc,
)
from deepfake.contracts.schemas import DetectionResult, JobCreated, JobState, JobStatus
from deepfake.evidence_files import inline
from deepfake.report import render_pdf, render_report
from deepfake.uploads import remove_quietly
from gateway.callbacks import CallbackPolicy, CallbackRefused
from gateway.dependencies import BaseUrl, Callbacks, Evidence, Metrics, Owner, Runner, Settings, Store
from gateway.jobs.runner import job_status, job_url
from gateway.jobs.store import JobRecord, JobStore
from gateway.receive import receive_video
from gateway.settings import GatewaySettings

router = APIRouter(tags=["jobs"])
LOCATION_SCHEMA = {"type": "string", "format": "uri"}
JOB_UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The video file."},
                        "callback_url": {
                            "type": "string",
                            "description": (
                                "Optional https URL that gets the final job status as a signed POST "
                                "(X-Deepfake-Signature); it must resolve to public addresses only."
                            ),
                            "example": "https://example.org/hooks/deepfake",
                        },
                    },
                }
            }
        },
    }
}


async def _check_callback(
    url: str | None, owner: str, settings: GatewaySettings, policy: CallbackPolicy
) -> str | None:
    """The callback URL if the policy accepts it (gateway.callbacks); 422 naming the problem otherwise.
    Resolves the host (once) but connects nowhere."""
    if not url:
        return None
    if settings.callback_secret_for(owner) is None:
        raise ApiError(
            "callbacks_disabled",
            "this gateway sends no callbacks (no signing secret is configured); poll the job instead",
        )
    try:
        await policy.check_async(url)
    except CallbackRefused as exc:
        raise exc.to_api_error() from None
    return url


def _own_job(store: JobStore, job_id: str, owner: str) -> JobRecord:
    job = store.get(job_id)
    if job is None or job.owner != owner:
        raise ApiError("job_not_found", f"no job {job_id!r} for this API key (deleted, or never created)")
    return job


@router.post(
    "/v1/jobs",
    status_code=202,
    summary="Submit a video for asynchronous analysis",
    description=(
        "Upload as multipart/form-data (part `file`, optional `callback_url`). The answer is 202 with the "
        "job id and a `Location` header; poll it, then fetch `/v1/jobs/{id}/result`. Jobs survive gateway "
        "restarts.\n\n`curl -H 'X-API-Key: KEY' -F file=@clip.mp4 http://127.0.0.1:8080/v1/jobs`"
    ),
    response_model=JobCreated,
    openapi_extra=JOB_UPLOAD_OPENAPI,
    responses={
        202: {"headers": {"Location": {"description": "The job's status URL.", "schema": LOCATION_SCHEMA}}},
        **error_responses_doc(
            *AUTH_ERRORS, *(c for c in UPLOAD_ERRORS if c not in PIPELINE_ONLY_ERRORS), *CALLBACK_ERRORS
        ),
    },
)
async def create_job(
    request: Request,
    response: Response,
    owner: Owner,
    settings: Settings,
    metrics: Metrics,
    store: Store,
    runner: Runner,
    policy: Callbacks,
    base_url: BaseUrl,
) -> JobCreated:
    upload = await receive_video(request, settings, metrics, settings.max_duration_s)
    try:
        callback_url = await _check_callback(upload.fields.get("callback_url"), owner, settings, policy)
        now = time.time()
        job = JobRecord(
            id=uuid.uuid4().hex,
            state="queued",
            owner=owner,
            upload_path=str(upload.path.resolve()),
            filename=upload.filename,
            callback_url=callback_url,
            created_at=now,
            updated_at=now,
        )
        await run_in_threadpool(store.create, job)
    except BaseException:
        remove_quietly(upload.path)
        raise
    runner.notify()
    status_url = job_url(base_url, job.id)
    response.headers["Location"] = status_url
    return JobCreated(id=job.id, state=job.state, status_url=status_url, result_url=f"{status_url}/result")


MAX_OFFSET = 10_000
NEXT_PAGE_HEADER = {
    "Link": {
        "description": 'The next page, if any: `<https://.../v1/jobs?offset=50&limit=50>; rel="next"`.',
        "schema": {"type": "string"},
    }
}


@router.get(
    "/v1/jobs",
    summary="Your jobs, newest first, a page at a time",
    description='Pages of `limit` jobs from `offset`; the `Link` header (rel="next") names the next page '
    "while there is one.",
    response_model=list[JobStatus],
    responses={200: {"headers": NEXT_PAGE_HEADER}, **error_responses_doc(*AUTH_ERRORS, "invalid_request")},
)
def list_jobs(
    response: Response,
    owner: Owner,
    store: Store,
    base: BaseUrl,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Jobs per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Jobs to skip (newest first).")] = 0,
) -> list[JobStatus]:
    # One more than the page tells whether a next page exists; the store interface stays a plain "newest N".
    jobs = store.list(owner, state, offset + limit + 1)
    page, more = jobs[offset : offset + limit], len(jobs) > offset + limit
    if more and offset + limit <= MAX_OFFSET:
        query = {"offset": offset + limit, "limit": limit, **({"state": state} if state else {})}
        response.headers["Link"] = f'<{base}/v1/jobs?{urlencode(query)}>; rel="next"'
    return [job_status(job, base) for job in page]


@router.get(
    "/v1/jobs/{job_id}",
    summary="Job status and progress",
    response_model=JobStatus,
    responses=error_responses_doc(*AUTH_ERRORS, "job_not_found"),
)
def get_job(job_id: str, owner: Owner, store: Store, base_url: BaseUrl) -> JobStatus:
    return job_status(_own_job(store, job_id, owner), base_url)


@router.get(
    "/v1/jobs/{job_id}/result",
    summary="The detection result of a finished job",
    response_model=DetectionResult,
    responses=error_responses_doc(*AUTH_ERRORS, *JOB_RESULT_ERRORS),
)
def get_job_result(
    job_id: str, owner: Owner, store: Store, evidence: Evidence, base_url: BaseUrl
) -> Response:
    result_json = _finished_result(store, job_id, owner)
    return Response(evidence.absolute(result_json, job_id, base_url), media_type="application/json")


def _finished_result(store: JobStore, job_id: str, owner: str) -> str:
    """The result JSON of the key's finished job; 404 unknown, 409 failed or not finished yet."""
    job = _own_job(store, job_id, owner)
    if job.state == "failed" and job.error is not None:
        raise ApiError(
            "job_failed",
            f"the job failed: {job.error.message}",
            {"job_error": job.error.model_dump()},
        )
    if job.state != "succeeded" or job.result_json is None:
        raise ApiError(
            "job_not_finished",
            f"the job is {job.state} ({job.progress:.0%} done); poll /v1/jobs/{job_id}",
            {"state": job.state, "progress": job.progress},
            headers={"Retry-After": "2"},
        )
    return job.result_json


EVIDENCE_NAME_DOC = "`track-<track id>-thumbnail.jpg`, `-heatmap.jpg` or `-strip.jpg`, as the result lists."


@router.get(
    "/v1/jobs/{job_id}/evidence/{name}",
    summary="An evidence image of a finished job (JPEG)",
    description="The URLs are listed in the result's `tracks[].evidence`; the same API key is needed. "
    + EVIDENCE_NAME_DOC,
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses_doc(*AUTH_ERRORS, "job_not_found", "evidence_not_found"),
    },
)
def get_job_evidence(job_id: str, name: str, owner: Owner, store: Store, evidence: Evidence) -> FileResponse:
    _own_job(store, job_id, owner)
    path = evidence.path(job_id, name)
    if path is None:
        raise ApiError("evidence_not_found", f"job {job_id!r} has no evidence image {name!r}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/v1/jobs/{job_id}/report",
    summary="A self-contained HTML report of a finished job",
    description="Verdict, calibrated score and what the threshold means, each face with its images "
    "(inlined), the timeline, the file's SHA-256, size and duration, the model and its checksum, the "
    "time of analysis and the method's limits. One file: it opens offline and can be archived. "
    "`?format=pdf` gives the same report as PDF.",
    response_class=HTMLResponse,
    responses={
        200: {
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            }
        },
        **error_responses_doc(*AUTH_ERRORS, *JOB_RESULT_ERRORS, "invalid_request"),
    },
)
def get_job_report(
    job_id: str,
    owner: Owner,
    store: Store,
    evidence: Evidence,
    report_format: Annotated[
        Literal["html", "pdf"], Query(alias="format", description="`html` (default) or `pdf`.")
    ] = "html",
) -> Response:
    result = DetectionResult.model_validate_json(_finished_result(store, job_id, owner))
    html = render_report(inline(result, lambda name: evidence.read(job_id, name)))
    name = f"deepfake-report-{job_id}.{report_format}"
    headers = {"Content-Disposition": f'inline; filename="{name}"'}
    if report_format == "pdf":
        # 0.13-0.17 s of CPU for a one-face report on the development machine: on the thread pool, as
        # the whole route is.
        return Response(render_pdf(html), media_type="application/pdf", headers=headers)
    return HTMLResponse(html, headers=headers)


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its upload (a running analysis finishes but its result is discarded)",
    responses=error_responses_doc(*AUTH_ERRORS, "job_not_found"),
)
def delete_job(job_id: str, owner: Owner, store: Store, evidence: Evidence) -> Response:
    _own_job(store, job_id, owner)
    removed = store.delete(job_id)
    if removed is not None and removed.state == "queued" and removed.upload_path:
        remove_quietly(Path(removed.upload_path))
    evidence.delete(job_id)
    return Response(status_code=204)
