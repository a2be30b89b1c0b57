"""The preprocessor's one credential: a shared service token (``DEEPFAKE_SERVICE_TOKEN``).

WHY a middleware and not a route dependency: it covers every path the app serves, including the
OpenAPI document, Swagger UI and paths that do not exist, so nothing new can be added unprotected.
Only the health probes stay open (kubelet and Compose health checks carry no credential).

The rule:
- token configured: every request but ``/healthz`` and ``/readyz`` must carry
  ``Authorization: Bearer <token>`` (or ``X-Service-Token: <token>``); compared in constant time;
  otherwise 401 ``unauthorized``.
- the health probes answer without a token, but a request that presents a wrong one is refused there
  too, so the gateway's readiness check (which sends its token) fails on a token mismatch;
- no token configured: only loopback peers (127.0.0.0/8, ::1) are served, everyone else gets 401 saying
  the service needs a token. A developer's single-machine run works unchanged; a pod or container that
  is reachable over a network is closed until the operator sets the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from deepfake.api_errors import error_response
from deepfake.contracts.schemas import ErrorDetail

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
TOKEN_HEADER = "x-service-token"
WRONG_TOKEN = "the service token is not valid"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def presented_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        if key == "authorization" and text[:7].lower() == "bearer ":
            return text[7:].strip()
        if key == TOKEN_HEADER:
            return text
    return None


class ServiceTokenMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if scope.get("path") in OPEN_PATHS and problem != WRONG_TOKEN:
            problem = None  # probes carry no token; a wrong one (the gateway's readiness) still fails
        if problem is None:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        log.warning("refused %s %s from %s: %s", scope.get("method"), scope.get("path"), client, problem)
        if scope["type"] == "websocket":  # refused before the handshake completes: the client sees 403
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4401, "reason": problem})
            return
        response = error_response(401, ErrorDetail(code="unauthorized", message=problem))
        await response(scope, receive, send)

    def _problem(self, scope: Scope) -> str | None:
        """None when the request may pass, else the reason it may not (safe to show the caller)."""
        if self.token is None:
            if is_loopback((scope.get("client") or (None, 0))[0]):
                return None
            return "this service needs a service token (DEEPFAKE_SERVICE_TOKEN) for callers beyond loopback"
        presented = presented_token(scope.get("headers", []))
        if presented is None:
            return "send the service token as Authorization: Bearer <token>"
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            return WRONG_TOKEN
        return None
