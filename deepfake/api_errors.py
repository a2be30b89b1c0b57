"""The one error shape (deepfake.contracts.schemas.ErrorBody) for every error a service returns.

WHY: FastAPI answers its own errors as ``{"detail": ...}`` and unexpected exceptions as a bare 500.
Clients of both services must see one shape, ``{"error": {"code", "message", "details"}}``, and never a
stack trace; installing these handlers on each app guarantees it. The errors themselves and their
code -> status table are deepfake.contracts.errors (no FastAPI there, so the CLI shares them).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from deepfake.contracts.errors import ERROR_CATALOGUE, GENERIC_CODES, ServiceError
from deepfake.contracts.schemas import ErrorBody, ErrorDetail, StreamError, stream_close_code

log = logging.getLogger(__name__)


class ApiError(ServiceError):
    """Raise from any endpoint to answer with the error shape; its status is the code's
    (deepfake.contracts.errors.ERROR_CATALOGUE); `headers` e.g. Retry-After."""


def error_response(
    http_status: int, detail: ErrorDetail, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=http_status, headers=headers)


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
        description = GENERIC_CODES.get(status, "error").replace("_", " ")
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


async def close_websocket(ws: WebSocket, error: ServiceError) -> None:
    """A WebSocket's refusal: the StreamError message, then the close code of its HTTP status
    (deepfake.contracts.schemas.stream_close_code). The client may already be gone; that is not an error."""
    try:
        await ws.send_text(StreamError(error=error.to_error_detail()).model_dump_json())
        await ws.close(stream_close_code(error.http_status), error.code)
    except Exception:
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


def install_error_handlers(app: FastAPI) -> None:
    """Answer every ServiceError (the one root: uploads, videos, the preprocessor's answers, the job store,
    ApiError), HTTP and validation errors, and anything unexpected, all in the one error shape."""

    async def service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.http_status, exc.to_error_detail(), headers)

    app.add_exception_handler(ServiceError, service_error)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = GENERIC_CODES.get(exc.status_code, "error")
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
