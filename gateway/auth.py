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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from deepfake.api_errors import ApiError
from deepfake.app_state import app_state
from gateway.rate_limit import AuthFailureThrottle, RateLimiter

if TYPE_CHECKING:  # gateway.settings imports owner_of from here
    from gateway.metrics import GatewayMetrics
    from gateway.settings import GatewaySettings

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


@dataclass(frozen=True)
class Authenticator:
    """What the key check needs, built once per app (gateway.app) and handed to routes as a dependency."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    rate_limiter: RateLimiter
    throttle: AuthFailureThrottle
    keys: frozenset[str]
    trusted_proxies: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> Authenticator:
        return cls(
            settings,
            metrics,
            RateLimiter(settings.rate_limit_per_minute),
            AuthFailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_s),
            settings.api_key_set(),
            parse_networks(settings.trusted_proxies),
        )

    def authenticate(self, conn: HTTPConnection, api_key: str | None) -> str:
        """The caller's owner id, for any connection, a WebSocket's too (its refusals become close codes):
        401 without a valid key, 429 (Retry-After) over the rate limit or after too many wrong keys."""
        settings, metrics = self.settings, self.metrics
        if settings.auth_disabled:
            owner = ANONYMOUS
        else:
            if not api_key:
                metrics.rejected.labels("missing_key").inc()
                raise ApiError("unauthorized", "send your API key in the X-API-Key header")
            address = client_address(conn, self.trusted_proxies)
            wait_s = self.throttle.retry_after(address)
            if wait_s > 0:
                raise self._refusal("too_many_auth_failures", "auth_throttled", wait_s)
            if not any(hmac.compare_digest(api_key.encode(), key.encode()) for key in self.keys):
                self.throttle.record_failure(address)
                metrics.rejected.labels("invalid_key").inc()
                raise ApiError("unauthorized", "the API key in X-API-Key is not valid")
            owner = owner_of(api_key)
        wait_s = self.rate_limiter.acquire(owner)
        if wait_s > 0:
            raise self._refusal("rate_limited", "rate_limited", wait_s)
        return owner

    def _refusal(self, code: str, metric_label: str, wait_s: float) -> ApiError:
        """A 429 with Retry-After (whole seconds), counted under `metric_label`."""
        self.metrics.rejected.labels(metric_label).inc()
        retry_after = self.rate_limiter.retry_after_header(wait_s)
        reason = (
            "too many invalid API keys from your address"
            if code == "too_many_auth_failures"
            else f"over {self.settings.rate_limit_per_minute} requests per minute"
        )
        return ApiError(code, f"{reason}; retry in {retry_after} s", headers={"Retry-After": retry_after})


Auth = Annotated[Authenticator, Depends(app_state("authenticator"))]


def require_api_key(request: Request, auth: Auth, api_key: str | None = Security(API_KEY_HEADER)) -> str:
    """The caller's owner id (Authenticator.authenticate): the Owner dependency of every API route."""
    return auth.authenticate(request, api_key)
