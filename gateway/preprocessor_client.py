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

from deepfake.contracts.errors import ERROR_CATALOGUE, ServiceError
from deepfake.contracts.schemas import ErrorDetail

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


# Answers that mean "the analysis service cannot take this now" (unavailable, busy, not ready, Triton
# down, timed out): the same request may well succeed later, so jobs retry them (gateway.jobs.runner).
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class PreprocessorError(ServiceError):
    """The analysis did not produce a result; its code (and so its status) is what the client gets."""

    _transient: bool | None = None

    @property
    def transient(self) -> bool:
        """The failure is the service's state, not the request's (an outage, a full queue, a timeout);
        decided from the transport error's type or the upstream HTTP status, never from message text. By
        default a 503 or 504 is transient and everything else final."""
        return self.http_status in (503, 504) if self._transient is None else self._transient

    def marked(self, transient: bool) -> PreprocessorError:
        self._transient = transient
        return self


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
    code = "preprocessor_unavailable"
    return PreprocessorError(code, PUBLIC_MESSAGES[code], headers={"Retry-After": "5"})


def _public(error: PreprocessorError) -> PreprocessorError:
    """The error as a public client may see it: 4xx (the client's video) pass unchanged, 5xx get our
    text for their code and no details."""
    if error.http_status in (401, 403):
        # The preprocessor refused the gateway's DEEPFAKE_SERVICE_TOKEN: our misconfiguration.
        log.error("the analysis service refused the gateway's service token: %s", error.message)
        # a configuration error: retrying cannot fix it
        return PreprocessorError("bad_gateway", "the analysis service refused this gateway").marked(False)
    if error.http_status < 500:
        return error
    log.warning(
        "analysis service error %d %s: %s %s", error.http_status, error.code, error.message, error.details
    )
    error.message = PUBLIC_MESSAGES.get(error.code, GENERIC_MESSAGE)
    error.details = {}
    return error


def _error_from_body(status: int, body: Any) -> PreprocessorError:
    """The preprocessor's error answer as a PreprocessorError; an answer that is not one of its own
    (no error body, a code the catalogue gives another status) is a bad_gateway."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        try:
            detail = ErrorDetail.model_validate(body["error"])
        except ValueError:
            detail = None
        if detail is not None and ERROR_CATALOGUE.get(detail.code, (None,))[0] == status:
            return _public(PreprocessorError(detail.code, detail.message, detail.details))
    # Not the preprocessor's own answer (a proxy in between, a service without endpoints during a
    # restart?); its status still tells whether it is worth another try.
    message = f"the analysis service answered {status} without an error body of its own"
    return PreprocessorError("bad_gateway", message).marked(status in TRANSIENT_STATUSES)


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

    async def request_analysis(
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
            raise PreprocessorError("analysis_timeout", "the analysis took too long") from exc
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
        raise PreprocessorError("bad_gateway", "the analysis stream ended without a result")

    async def aclose(self) -> None:
        await self._client.aclose()
