"""API keys (header X-API-Key) and the per-key rate limit, as FastAPI dependencies.

WHY keys are hashed into an `owner`: jobs are stored with the owner, not the key, so a leaked database
does not leak keys, and one client cannot read another's jobs. Keys are compared in constant time.
Auth is off only when DEEPFAKE_AUTH_DISABLED=true says so; an empty key list otherwise refuses everyone.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from deepfake.api_errors import ApiError

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key.")
ANONYMOUS = "anonymous"


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def require_api_key(request: Request, api_key: str | None = Security(API_KEY_HEADER)) -> str:
    """The caller's owner id; 401 without a valid key, 429 (Retry-After) over the rate limit."""
    settings = request.app.state.settings
    metrics = request.app.state.metrics
    if settings.auth_disabled:
        owner = ANONYMOUS
    else:
        keys = request.app.state.api_keys
        if not api_key:
            metrics.rejected.labels("missing_key").inc()
            raise ApiError(401, "unauthorized", "send your API key in the X-API-Key header")
        if not any(hmac.compare_digest(api_key.encode(), key.encode()) for key in keys):
            metrics.rejected.labels("invalid_key").inc()
            raise ApiError(401, "unauthorized", "the API key in X-API-Key is not valid")
        owner = owner_of(api_key)
    wait_s = request.app.state.rate_limiter.acquire(owner)
    if wait_s > 0:
        metrics.rejected.labels("rate_limited").inc()
        retry_after = request.app.state.rate_limiter.retry_after_header(wait_s)
        raise ApiError(
            429,
            "rate_limited",
            f"over {settings.rate_limit_per_minute} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )
    return owner
