"""API keys (header X-API-Key) and the per-key rate limit, as FastAPI dependencies.

WHY keys are hashed into an `owner`: jobs are stored with the owner, not the key, so a leaked database
does not leak keys, and one client cannot read another's jobs. Keys are compared in constant time.
Auth is off only when DEEPFAKE_AUTH_DISABLED=true says so; an empty key list otherwise refuses everyone.
Wrong keys are throttled per client address (gateway.rate_limit.AuthFailureThrottle): after
DEEPFAKE_AUTH_FAILURE_LIMIT wrong keys within DEEPFAKE_AUTH_FAILURE_WINDOW_S the address gets 429 with
Retry-After. Behind a reverse proxy the client address is read from X-Forwarded-For, but only when the
peer is one of DEEPFAKE_TRUSTED_PROXIES (otherwise anyone could pick their own address).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from deepfake.api_errors import ApiError

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key.")
ANONYMOUS = "anonymous"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses/CIDR networks; a bad entry is a ValueError naming it."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"DEEPFAKE_TRUSTED_PROXIES: {entry!r} is not an address or network") from exc
    return tuple(networks)


def _in(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host.strip())
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(request: HTTPConnection, trusted: tuple[Network, ...] = ()) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For that is not itself a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def require_api_key(request: Request, api_key: str | None = Security(API_KEY_HEADER)) -> str:
    """The caller's owner id; 401 without a valid key, 429 (Retry-After) over the rate limit."""
    return authenticate(request, api_key)


def authenticate(request: HTTPConnection, api_key: str | None) -> str:
    """:func:`require_api_key` for any connection, a WebSocket's too (its refusals become close codes)."""
    settings = request.app.state.settings
    metrics = request.app.state.metrics
    if settings.auth_disabled:
        owner = ANONYMOUS
    else:
        keys = request.app.state.api_keys
        if not api_key:
            metrics.rejected.labels("missing_key").inc()
            raise ApiError("unauthorized", "send your API key in the X-API-Key header")
        throttle = request.app.state.auth_throttle
        address = client_address(request, request.app.state.trusted_proxies)
        wait_s = throttle.retry_after(address)
        if wait_s > 0:
            metrics.rejected.labels("auth_throttled").inc()
            retry_after = request.app.state.rate_limiter.retry_after_header(wait_s)
            raise ApiError(
                "too_many_auth_failures",
                f"too many invalid API keys from your address; retry in {retry_after} s",
                headers={"Retry-After": retry_after},
            )
        if not any(hmac.compare_digest(api_key.encode(), key.encode()) for key in keys):
            throttle.record_failure(address)
            metrics.rejected.labels("invalid_key").inc()
            raise ApiError("unauthorized", "the API key in X-API-Key is not valid")
        owner = owner_of(api_key)
    wait_s = request.app.state.rate_limiter.acquire(owner)
    if wait_s > 0:
        metrics.rejected.labels("rate_limited").inc()
        retry_after = request.app.state.rate_limiter.retry_after_header(wait_s)
        raise ApiError(
            "rate_limited",
            f"over {settings.rate_limit_per_minute} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )
    return owner
