"""The one error shape (deepfake.schemas.ErrorBody) for every error a service returns.

WHY: FastAPI answers its own errors as ``{"detail": ...}`` and unexpected exceptions as a bare 500.
Clients of both services must see one shape, ``{"error": {"code", "message", "details"}}``, and never a
stack trace; installing these handlers on each app guarantees it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from deepfake.schemas import ErrorBody, ErrorDetail, StreamError, stream_close_code

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "upload_timeout",
    409: "conflict",
    413: "too_large",
    415: "not_a_video",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """Raise from any endpoint to answer with the error shape; `headers` e.g. Retry-After."""

    def __init__(
        self,
        http_status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers

    def to_error_detail(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, message=self.message, details=self.details)


def error_response(
    http_status: int, detail: ErrorDetail, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=http_status, headers=headers)


# Every error code the services answer with: its HTTP status and a typical message. The OpenAPI lists, per
# operation and status, which of these codes may come back, each with an example body.
ERROR_CATALOGUE: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the upload must be multipart/form-data with a part named 'file'"),
    "empty_file": (400, "the uploaded file is empty"),
    "unauthorized": (401, "missing or invalid API key (header X-API-Key)"),
    "job_not_found": (404, "no job '3f2a' for this API key (deleted, or never created)"),
    "evidence_not_found": (404, "job '3f2a' has no evidence image 'track-9-strip.jpg'"),
    "upload_timeout": (408, "the upload sent no data for 20 s; the connection was closed"),
    "job_not_finished": (409, "the job is running (40% done); poll /v1/jobs/3f2a"),
    "job_failed": (409, "the job failed: the video is corrupt or truncated"),
    "too_large": (413, "the upload is larger than the limit of 524288000 bytes"),
    "too_long": (413, "the video lasts 900.0 s, over the limit of 600 s; cut it or submit a shorter one"),
    "too_large_frame": (413, "frames of 16000x16000 exceed the limit of 33177600 pixels"),
    "not_a_video": (415, "not a video container we can read; the type is judged from the bytes"),
    "no_video_stream": (415, "the file has no video stream"),
    "unsupported_codec": (415, "the video codec is not supported"),
    "animated_image": (415, "an animated image, not a video"),
    "corrupt_video": (422, "the video is corrupt or truncated"),
    "zero_frames": (422, "no frame could be decoded"),
    "frame_too_small": (422, "frames of 1x1 are too small to hold a face"),
    "invalid_request": (422, "the request is invalid; see details"),
    "invalid_callback_url": (422, "callback_url must be an absolute https URL"),
    "callback_url_forbidden": (422, "callback_url must use https (plain http is not accepted)"),
    "callback_url_unresolvable": (422, "callback_url host 'hooks.example' does not resolve"),
    "callbacks_disabled": (422, "this gateway sends no callbacks (no signing secret is configured)"),
    "rate_limited": (429, "rate limit of 60 requests per minute exceeded; retry after 3 s"),
    "too_many_auth_failures": (429, "too many wrong API keys from your address; retry after 120 s"),
    "internal_error": (500, "internal error; the request was logged"),
    "model_error": (500, "the model server failed on this request; it was logged"),
    "bad_gateway": (502, "the analysis service refused this gateway"),
    "preprocessor_unavailable": (503, "the analysis service is unreachable; retry later"),
    "inference_unavailable": (503, "the inference server is unavailable; retry later"),
    "busy": (503, "the analysis service is busy; retry later"),
    "not_ready": (503, "the analysis service is not ready; retry later"),
    "analysis_timeout": (504, "the analysis took too long"),
    # live streams (/v1/streams): sent in the refusal message, the close code is 4000 + the status
    "bad_message": (400, 'text messages are {"t": <seconds>} or {"type": "end"}'),
    "idle_timeout": (408, "nothing received for 10 s: stream closed"),
    "too_many_streams": (429, "this API key already has 2 live stream(s) open; close one"),
    "invalid_frame": (415, "a frame must be one JPEG or PNG image (binary message); this is neither"),
}
# Statuses whose answers carry Retry-After (seconds to wait).
RETRY_AFTER_STATUSES = frozenset({409, 429, 503})
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "example": 5},
}
# Groups of codes the operations share.
AUTH_ERRORS = ("unauthorized", "rate_limited", "too_many_auth_failures")
UPLOAD_ERRORS = (
    "bad_request", "empty_file", "upload_timeout", "too_large", "too_long", "too_large_frame",
    "not_a_video", "no_video_stream", "unsupported_codec", "animated_image", "corrupt_video", "zero_frames",
    "frame_too_small",
)  # fmt: skip
# Checked only by the analysis pipeline: a synchronous detection answers them, a job fails with them.
PIPELINE_ONLY_ERRORS = ("too_large_frame", "unsupported_codec", "frame_too_small")
CALLBACK_ERRORS = (
    "invalid_callback_url",
    "callback_url_forbidden",
    "callback_url_unresolvable",
    "callbacks_disabled",
)
JOB_RESULT_ERRORS = ("job_not_found", "job_not_finished", "job_failed")
ANALYSIS_ERRORS = (
    "internal_error", "model_error", "bad_gateway", "preprocessor_unavailable", "inference_unavailable",
    "busy", "not_ready", "analysis_timeout",
)  # fmt: skip


def error_responses_doc(*items: int | str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error shape. A code (str, from ERROR_CATALOGUE) lists it under
    its status with an example body; a bare status (int) documents the status without a code list."""
    by_status: dict[int, list[str]] = {}
    for item in items:
        if isinstance(item, int):
            by_status.setdefault(item, [])
        else:
            by_status.setdefault(ERROR_CATALOGUE[item][0], []).append(item)
    docs: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted(by_status.items()):
        description = STATUS_CODES.get(status, "error").replace("_", " ")
        entry: dict[str, Any] = {"model": ErrorBody, "description": description}
        if codes:
            entry["description"] = "Error codes: " + ", ".join(f"`{code}`" for code in codes) + "."
            examples = {
                code: {
                    "summary": code,
                    "value": {"error": {"code": code, "message": ERROR_CATALOGUE[code][1], "details": {}}},
                }
                for code in codes
            }
            entry["content"] = {"application/json": {"examples": examples}}
        if status in RETRY_AFTER_STATUSES:
            entry["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        docs[status] = entry
    return docs


async def close_websocket(ws: WebSocket, error: ApiError) -> None:
    """A WebSocket's refusal: the StreamError message, then the close code of its HTTP status
    (deepfake.schemas.stream_close_code). The client may already be gone; that is not an error."""
    try:
        await ws.send_text(StreamError(error=error.to_error_detail()).model_dump_json())
        await ws.close(stream_close_code(error.http_status), error.code)
    except Exception:  # noqa: BLE001 (a closed or broken socket: nothing left to tell)
        log.debug("websocket already closed when refusing it: %s", error.code)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The `Allow` value of a 405: every method some route serves at the request's path.

    WHY: Starlette's 405 names only the methods of the first route whose path matched, so `DELETE
    /v1/jobs` said `Allow: POST` while `GET /v1/jobs` exists too (found by schemathesis). Each method is
    asked of the routes through `matches`, the one interface FastAPI's nested included routers share."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    )


def install_error_handlers(app: FastAPI, *error_types: type[Exception]) -> None:
    """Answer ApiError, the given domain errors (with http_status + to_error_detail()), HTTP and
    validation errors, and anything unexpected, all in the one error shape."""

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return error_response(exc.http_status, exc.to_error_detail(), dict(headers) if headers else None)  # type: ignore[attr-defined]

    domain_types: tuple[type[Exception], ...] = (ApiError, *error_types)
    for error_type in domain_types:
        app.add_exception_handler(error_type, domain_error)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, ErrorDetail(code=code, message=message), headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        detail = ErrorDetail(
            code="invalid_request", message="the request is invalid; see details", details={"errors": errors}
        )
        return error_response(422, detail)

    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        detail = ErrorDetail(code="internal_error", message="internal error; the request was logged")
        return error_response(500, detail)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
