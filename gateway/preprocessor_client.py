"""The gateway's HTTP client for the preprocessor service.

WHY its own module: the gateway must tell "your video is bad" (the preprocessor's 4xx, passed through
unchanged in the one error shape) from "we cannot analyse right now" (preprocessor or Triton down: 503
with a reason) from "we broke" (5xx). Everything about that distinction lives here. The upload is
streamed from disk as multipart; job analyses ask for the NDJSON progress stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from deepfake.schemas import ErrorDetail

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


# Answers that mean "the analysis service cannot take this now" (unavailable, busy, not ready, Triton
# down, timed out): the same request may well succeed later, so jobs retry them (gateway.jobs.runner).
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class PreprocessorError(Exception):
    """The analysis did not produce a result; `http_status` and `detail` are what the client gets.

    `transient`: the failure is the service's state, not the request's (an outage, a full queue, a
    timeout); decided from the transport error or the upstream HTTP status, never from message text.
    By default a 503 or 504 is transient and everything else final.
    """

    def __init__(
        self,
        http_status: int,
        detail: ErrorDetail,
        headers: dict[str, str] | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(detail.message)
        self.http_status = http_status
        self.detail = detail
        self.headers = headers
        self.transient = http_status in (503, 504) if transient is None else transient

    def to_error_detail(self) -> ErrorDetail:
        return self.detail


# What public clients read for the analysis service's own failures (5xx): the code stays, the text is
# ours. The preprocessor's and Triton's texts may name internal addresses and host names; they are
# logged here instead (issue 10: no internal address in any public message).
PUBLIC_MESSAGES = {
    "preprocessor_unavailable": "the analysis service is unreachable; retry later",
    "inference_unavailable": "the inference server is unavailable; retry later",
    "busy": "the analysis service is busy; retry later",
    "not_ready": "the analysis service is not ready; retry later",
    "model_error": "the model server failed on this request; it was logged",
    "internal_error": "internal error in the analysis service; it was logged",
}
GENERIC_MESSAGE = "the analysis service failed; retry later"


def _unavailable(base_url: str, exc: Exception) -> PreprocessorError:
    log.warning("preprocessor at %s unreachable: %s: %s", base_url, type(exc).__name__, exc)
    return PreprocessorError(
        503,
        ErrorDetail(code="preprocessor_unavailable", message=PUBLIC_MESSAGES["preprocessor_unavailable"]),
        {"Retry-After": "5"},
    )


def _public(error: PreprocessorError) -> PreprocessorError:
    """The error as a public client may see it: 4xx (the client's video) pass unchanged, 5xx get our
    text for their code and no details."""
    detail = error.detail
    if error.http_status in (401, 403):
        # The preprocessor refused the gateway's DEEPFAKE_SERVICE_TOKEN: our misconfiguration.
        log.error("the analysis service refused the gateway's service token: %s", detail.message)
        return PreprocessorError(
            502,
            ErrorDetail(code="bad_gateway", message="the analysis service refused this gateway"),
            transient=False,  # a configuration error: retrying cannot fix it
        )
    if error.http_status < 500:
        return error
    log.warning(
        "analysis service error %d %s: %s %s", error.http_status, detail.code, detail.message, detail.details
    )
    message = PUBLIC_MESSAGES.get(detail.code, GENERIC_MESSAGE)
    error.detail = ErrorDetail(code=detail.code, message=message)
    return error


def _error_from_body(status: int, body: Any) -> PreprocessorError:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        try:
            return _public(PreprocessorError(status, ErrorDetail.model_validate(body["error"])))
        except ValueError:
            pass
    # No error body: not the preprocessor's own answer (a proxy in between, a service without endpoints
    # during a restart?); its status still tells whether it is worth another try.
    return PreprocessorError(
        502,
        ErrorDetail(
            code="bad_gateway", message=f"the analysis service answered {status} without an error body"
        ),
        transient=status in TRANSIENT_STATUSES,
    )


class PreprocessorClient:
    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        service_token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Connecting must be quick (a dead service is a 503 now, not in 15 minutes); reading the answer
        # may take as long as an analysis does.
        timeout = httpx.Timeout(timeout_s, connect=5.0)
        # The preprocessor's credential (DEEPFAKE_SERVICE_TOKEN, preprocessor.auth), on every request.
        headers = {"Authorization": f"Bearer {service_token}"} if service_token else None
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, headers=headers
        )

    async def readiness(self) -> tuple[bool, str]:
        try:
            response = await self._client.get("/readyz", timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("readiness: preprocessor at %s unreachable: %s", self.base_url, type(exc).__name__)
            return False, "the analysis service is unreachable"
        if response.status_code == 200:
            return True, "ready"
        try:
            reason = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {response.status_code}"
        # The reason names Triton's address: the log gets it, the (public) answer does not.
        log.warning("readiness: preprocessor at %s not ready: %s", self.base_url, reason)
        return False, "the analysis service is not ready"

    async def analyze(
        self,
        path: Path,
        filename: str | None,
        progress: Callable[[float], None] | None = None,
        evidence: bool = False,
    ) -> dict[str, Any]:
        """The DetectionResult JSON for the video at `path`; raises PreprocessorError otherwise.
        `evidence`: tracks carry their evidence images as data URIs."""
        headers = {"Accept": NDJSON if progress else "application/json"}
        params = {"evidence": "true"} if evidence else None
        try:
            with path.open("rb") as handle:
                files = {"file": (filename or "upload", handle, "application/octet-stream")}
                async with self._client.stream(
                    "POST", "/v1/analyze", files=files, headers=headers, params=params
                ) as response:
                    if response.status_code != 200 or progress is None:
                        await response.aread()
                        return self._plain_result(response)
                    return await self._stream_result(response, progress)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _unavailable(self.base_url, exc) from exc  # never reached the service
        except httpx.TimeoutException as exc:
            log.warning("analysis at %s timed out: %s: %s", self.base_url, type(exc).__name__, exc)
            raise PreprocessorError(
                504, ErrorDetail(code="analysis_timeout", message="the analysis took too long")
            ) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(self.base_url, exc) from exc

    @staticmethod
    def _plain_result(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        error = _error_from_body(response.status_code, body)
        if "retry-after" in response.headers:
            error.headers = {"Retry-After": response.headers["retry-after"]}
        raise error

    @staticmethod
    async def _stream_result(response: httpx.Response, progress: Callable[[float], None]) -> dict[str, Any]:
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            message = json.loads(line)
            if "progress" in message:
                progress(float(message["progress"]))
            elif "result" in message:
                return message["result"]
            elif "error" in message:
                raise _error_from_body(int(message.get("status", 500)), message)
        raise PreprocessorError(
            502, ErrorDetail(code="bad_gateway", message="the analysis stream ended without a result")
        )

    async def aclose(self) -> None:
        await self._client.aclose()
