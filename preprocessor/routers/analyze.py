"""POST /v1/analyze: one uploaded video in, the DetectionResult out (the same pipeline as the CLI).

With ``Accept: application/x-ndjson`` the answer is a stream of JSON lines instead: ``{"progress": f}``
while the analysis runs, then one ``{"result": {...}}`` or ``{"error": {...}, "status": N}``. The gateway
uses it to report job progress; plain clients get the ordinary JSON response. ``?evidence=true`` adds each
track's evidence images (thumbnail, heatmap, strip) as data URIs; the gateway asks for them for jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from deepfake.api_errors import UPLOAD_ERRORS, ApiError, error_responses_doc
from deepfake.contracts.errors import ServiceError
from deepfake.contracts.schemas import DetectionResult, ErrorBody
from deepfake.uploads import UPLOAD_OPENAPI, Upload, receive_upload, remove_quietly
from inference.triton_backend import TritonModelError, TritonUnavailableError
from preprocessor.dependencies import Metrics, Service, Settings
from preprocessor.service import AnalysisService, ServiceBusyError
from preprocessor.service_metrics import ServiceMetrics
from preprocessor.service_settings import ServiceSettings

log = logging.getLogger(__name__)
router = APIRouter(tags=["analysis"])
NDJSON = "application/x-ndjson"


def as_api_error(exc: Exception) -> ServiceError | None:
    """The service's failures as HTTP errors; None for anything unexpected (a 500). Its own errors
    (VideoError, ServiceBusyError) already are; the Triton backend's are translated by type."""
    if isinstance(exc, ServiceError):
        return exc
    # Triton's errors name its address and model: logged here, never shown to callers.
    if isinstance(exc, TritonUnavailableError):
        log.warning("inference unavailable: %s", exc)
        return ApiError(
            "inference_unavailable",
            "the inference server is unavailable; retry later",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, TritonModelError):
        log.error("model error: %s", exc)
        return ApiError("model_error", "the model server failed on this request; it was logged")
    return None


def _without_server_path(error: ServiceError, upload: Upload) -> ServiceError:
    """Error texts name the spooled file; the client must see its own filename, never our paths."""
    name = upload.filename or "the upload"

    def clean(value: object) -> object:
        return value.replace(str(upload.path), name) if isinstance(value, str) else value

    error.message = str(clean(error.message))
    error.details = {key: clean(value) for key, value in error.details.items()}
    return error


async def _receive(request: Request, settings: ServiceSettings, metrics: ServiceMetrics) -> Upload:
    upload = await receive_upload(
        request.headers.get("content-type"),
        request.stream(),
        settings.spool_dir(),
        settings.max_bytes,
        read_timeout_s=settings.upload_read_timeout_s,
    )
    metrics.upload_bytes.inc(upload.size)
    return upload


async def _analyze(
    service: AnalysisService, metrics: ServiceMetrics, upload: Upload, progress=None, evidence: bool = False
) -> DetectionResult:
    start = time.perf_counter()
    try:
        result = await service.run_analysis(upload.path, upload.filename, progress, evidence)
    except Exception as exc:
        api_error = as_api_error(exc)
        metrics.analyses.labels(api_error.code if api_error else "internal_error").inc()
        if api_error is not None:
            raise _without_server_path(api_error, upload) from exc
        raise
    metrics.analyses.labels("ok").inc()
    metrics.analysis_seconds.observe(time.perf_counter() - start)
    return result


@router.post(
    "/v1/analyze",
    summary="Analyse one uploaded video",
    response_model=DetectionResult,
    openapi_extra=UPLOAD_OPENAPI,
    responses=error_responses_doc(
        *UPLOAD_ERRORS, "unauthorized", "busy", "inference_unavailable", "model_error", "internal_error"
    ),
)
async def post_analyze(
    request: Request,
    service: Service,
    settings: Settings,
    metrics: Metrics,
    evidence: Annotated[
        bool, Query(description="Add each track's thumbnail, heatmap and frame strip as data URIs.")
    ] = False,
):
    if service.admitted >= service.capacity:
        raise ServiceBusyError(max(1, settings.queue_size))
    upload = await _receive(request, settings, metrics)
    if NDJSON not in request.headers.get("accept", ""):
        try:
            return await _analyze(service, metrics, upload, evidence=evidence)
        finally:
            remove_quietly(upload.path)
    return StreamingResponse(_progress_stream(service, metrics, upload, evidence), media_type=NDJSON)


async def _progress_stream(
    service: AnalysisService, metrics: ServiceMetrics, upload: Upload, evidence: bool
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[float] = asyncio.Queue()

    def progress(fraction: float) -> None:  # called on the worker thread
        loop.call_soon_threadsafe(updates.put_nowait, float(fraction))

    task = asyncio.ensure_future(_analyze(service, metrics, upload, progress, evidence))
    last = -1.0
    try:
        while not task.done():
            getter = asyncio.ensure_future(updates.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                fraction = getter.result()
                if fraction - last >= 0.01:
                    last = fraction
                    yield (json.dumps({"progress": round(fraction, 4)}) + "\n").encode()
            else:
                getter.cancel()
        try:
            result = task.result()
            yield (json.dumps({"result": result.model_dump(mode="json")}) + "\n").encode()
        except ServiceError as exc:
            body = ErrorBody(error=exc.to_error_detail()).model_dump(mode="json")
            yield (json.dumps({**body, "status": exc.http_status}) + "\n").encode()
        except Exception:
            log.exception("analysis failed")
            detail = {
                "code": "internal_error",
                "message": "internal error; the request was logged",
                "details": {},
            }
            yield (json.dumps({"error": detail, "status": 500}) + "\n").encode()
    finally:
        if not task.done():
            task.cancel()
        remove_quietly(upload.path)
