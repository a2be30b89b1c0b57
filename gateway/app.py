"""The public gateway: `uvicorn --factory gateway.app:create_app --port 8080`.

A thin factory (FastAPI full-stack template style): it wires settings, the job store, the preprocessor
client, the job runner, auth/rate limit state, metrics, error handlers and routers; nothing runs at import
time, and the job runner starts with the app's lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from deepfake.api_errors import install_error_handlers
from deepfake.http_metrics import install_request_metrics
from gateway import openapi
from gateway.auth import Authenticator
from gateway.callbacks import CallbackPolicy, Resolver
from gateway.jobs.open_store import open_job_store
from gateway.jobs.runner import JobRunner
from gateway.metrics import GatewayMetrics
from gateway.preprocessor_client import PreprocessorClient
from gateway.routers import detections, health, jobs, streams, web
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
DESCRIPTION = """Deepfake video detection. Send your key in `X-API-Key` (the **Authorize** button).

* `POST /v1/detections`: short clips, answered in the same request.
* `POST /v1/jobs`: any length; poll `GET /v1/jobs/{id}`, then `GET /v1/jobs/{id}/result`.
* `WebSocket /v1/streams` (not listed below: OpenAPI describes no WebSockets; its messages as AsyncAPI:
  `GET /v1/streams/asyncapi.json`): a live stream. Key in
  `X-API-Key` or the query parameter `api_key`. Send each frame as a binary message (one JPEG or PNG),
  optionally preceded by the text message `{"t": <seconds>}` (its stream time), and `{"type": "end"}` to
  finish. You receive one JSON message per result, `{"type": "result", "t", "latency_ms",
  "frames_received", "frames_dropped", "tracks": [{"id", "score", "smoothed", "verdict", "box", "windows",
  "window"}]}`, then `{"type": "final", ...}` (per face the mean over all its windows) and the close code
  1000. A refusal sends `{"type": "error", "error": {"code", "message", "details"}}` and closes with 4000 +
  the HTTP status of the same refusal: 4401 no/invalid key, 4429 too many streams for the key or rate
  limited, 4413 frame too large (bytes or pixels), 4415 not a JPEG/PNG, 4422 frame too small, 4400 bad
  text message, 4408 idle timeout, 4503 analysis unavailable.

Every error has one shape: `{"error": {"code", "message", "details"}}`; each answer lists the codes it may
carry. The examples in this document are illustrative values, not measurements.
"""


def create_app(
    settings: GatewaySettings | None = None,
    preprocessor_transport: httpx.AsyncBaseTransport | None = None,
    callback_resolver: Resolver | None = None,
) -> FastAPI:
    """`preprocessor_transport` lets tests route the preprocessor calls to an in-process app;
    `callback_resolver` replaces DNS for callback hosts (tests)."""
    settings = settings or GatewaySettings()
    if not settings.auth_disabled and not settings.api_key_set():
        log.warning("no API keys configured (DEEPFAKE_API_KEYS): every request will get 401")
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    store = open_job_store(settings.job_store_url, settings.job_lease_s)
    metrics = GatewayMetrics()
    metrics.watch_job_store(store.count_by_state)
    preprocessor = PreprocessorClient(
        settings.preprocessor_url,
        settings.preprocessor_timeout_s,
        preprocessor_transport,
        settings.token(),
    )
    callback_policy = CallbackPolicy.from_settings(
        settings.callback_http_hosts, settings.callback_allowed_hosts, callback_resolver
    )
    runner = JobRunner(store, preprocessor, settings, metrics, callback_policy)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()
            await preprocessor.aclose()
            store.close()

    # gateway.routers.web serves the document (with `servers` naming this gateway) and both viewers from
    # local files (no CDN), so FastAPI's own routes for them are off.
    app = FastAPI(
        title="Deepfake detector API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    openapi.install(app)
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.preprocessor = preprocessor
    app.state.runner = runner
    app.state.evidence = runner.evidence
    app.state.callback_policy = callback_policy
    app.state.authenticator = Authenticator.from_settings(settings, metrics)
    app.state.open_streams = {}  # owner -> live streams open (/v1/streams)
    install_error_handlers(app)
    install_request_metrics(app, metrics.requests, metrics.latency)
    if settings.cors_origin_list():
        # Frontend apps on other origins call the API from browsers; the key travels in X-API-Key.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list(),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
        )
    for router in (health.router, detections.router, jobs.router, streams.router, web.router):
        app.include_router(router)
    web.mount_static(app)
    return app
