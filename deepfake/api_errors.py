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

from deepfake.schemas import ErrorBody, ErrorDetail, StreamError, stream_close_code

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "not_a_video",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
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


async def close_websocket(ws: WebSocket, error: ApiError) -> None:
    """A WebSocket's refusal: the StreamError message, then the close code of its HTTP status
    (deepfake.schemas.stream_close_code). The client may already be gone; that is not an error."""
    try:
        await ws.send_text(StreamError(error=error.to_error_detail()).model_dump_json())
        await ws.close(stream_close_code(error.http_status), error.code)
    except Exception:  # noqa: BLE001 (a closed or broken socket: nothing left to tell)
        log.debug("websocket already closed when refusing it: %s", error.code)


def error_responses_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for the given statuses."""
    return {
        status: {"model": ErrorBody, "description": STATUS_CODES.get(status, "error")} for status in statuses
    }


def install_error_handlers(app: FastAPI, *error_types: type[Exception]) -> None:
    """Answer ApiError, the given domain errors (with http_status + to_error_detail()), HTTP and
    validation errors, and anything unexpected, all in the one error shape."""

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc.http_status, exc.to_error_detail(), getattr(exc, "headers", None))  # type: ignore[attr-defined]

    for error_type in (ApiError, *error_types):
        app.add_exception_handler(error_type, domain_error)

    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, ErrorDetail(code=code, message=message), exc.headers)

    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
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
