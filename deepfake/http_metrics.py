"""Request count and latency middleware shared by both FastAPI services.

Each service owns its registry and metric names (``gateway_http_*``, ``preprocessor_http_*``); only the
recording, which must label routes the same way in both, lives here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram


def install_request_metrics(app: FastAPI, requests: Counter, latency: Histogram) -> None:
    """Count requests by method/route template/status and time them by route template.

    WHY the route template (``/v1/jobs/{job_id}``) and not the URL: one series per endpoint, not per job.
    """

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - start)
        return response
