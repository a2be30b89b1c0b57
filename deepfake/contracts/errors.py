"""The one error root and the one code -> HTTP status table of every deployable (CLI, preprocessor,
gateway).

WHY: the refusals used to be four unrelated classes (upload, video, API, preprocessor errors) that the
error handler joined by duck typing, each carrying its own status. Now each is a :class:`ServiceError`,
whose status is looked up from :data:`ERROR_CATALOGUE` by its code, so a code has one status wherever it
is raised, and one handler (deepfake.api_errors) answers them all. No FastAPI here: the CLI prints the
same errors without the serve extra.
"""

from __future__ import annotations

from typing import Any

from deepfake.contracts.schemas import ErrorDetail

# Every error code the services answer with (and the CLI prints): its HTTP status and a typical message.
# The OpenAPI lists, per operation and status, which of these codes may come back, each with an example.
ERROR_CATALOGUE: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the upload must be multipart/form-data with a part named 'file'"),
    "empty_file": (400, "the uploaded file is empty"),
    "not_a_file": (400, "the path is not a regular file"),
    "source_unavailable": (400, "the live source cannot be opened or stopped sending"),
    "unauthorized": (401, "missing or invalid API key (header X-API-Key)"),
    "forbidden": (403, "forbidden"),
    "file_not_found": (404, "no such file"),
    "not_found": (404, "not found"),
    "job_not_found": (404, "no job '3f2a' for this API key (deleted, or never created)"),
    "evidence_not_found": (404, "job '3f2a' has no evidence image 'track-9-strip.jpg'"),
    "method_not_allowed": (405, "method not allowed"),
    "upload_timeout": (408, "the upload sent no data for 20 s; the connection was closed"),
    "conflict": (409, "conflict"),
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
    # nginx's status for "the client went away": logged and counted, never delivered
    "client_disconnected": (499, "the client disconnected during the upload"),
    "internal_error": (500, "internal error; the request was logged"),
    "model_error": (500, "the model server failed on this request; it was logged"),
    "bad_gateway": (502, "the analysis service refused this gateway"),
    "unavailable": (503, "unavailable; retry later"),
    "preprocessor_unavailable": (503, "the analysis service is unreachable; retry later"),
    "inference_unavailable": (503, "the inference server is unavailable; retry later"),
    "busy": (503, "the analysis service is busy; retry later"),
    "not_ready": (503, "the analysis service is not ready; retry later"),
    "job_store_unavailable": (503, "the job store is unavailable; retry later"),
    "timeout": (504, "timeout"),
    "analysis_timeout": (504, "the analysis took too long"),
    # live streams (/v1/streams): sent in the refusal message, the close code is 4000 + the status
    "bad_message": (400, 'text messages are {"t": <seconds>} or {"type": "end"}'),
    "idle_timeout": (408, "nothing received for 10 s: stream closed"),
    "too_many_streams": (429, "this API key already has 2 live stream(s) open; close one"),
    "invalid_frame": (415, "a frame must be one JPEG or PNG image (binary message); this is neither"),
}
# The code of an HTTP error raised by the framework itself (an unknown route, a wrong method...).
GENERIC_CODES: dict[int, str] = {
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


def http_status(code: str) -> int:
    """The HTTP status of an error code; a code missing from the catalogue is a programming error."""
    try:
        return ERROR_CATALOGUE[code][0]
    except KeyError:
        raise ValueError(
            f"unknown error code {code!r}: add it to deepfake.contracts.errors.ERROR_CATALOGUE"
        ) from None


class ServiceError(Exception):
    """The root of every error a deployable answers with: a stable code (its status from the catalogue),
    a message that says what to fix, details, and optional headers (e.g. Retry-After)."""

    headers: dict[str, str] | None = None

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status(code)
        self.code = code
        self.message = message
        self.details = details or {}
        if headers is not None:
            self.headers = headers

    def to_error_detail(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, message=self.message, details=self.details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"
