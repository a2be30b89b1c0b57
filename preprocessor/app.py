"""The preprocessor service: `uvicorn --factory preprocessor.app:create_app --port 8081`.

A thin factory (FastAPI full-stack template style): settings, the analysis engine, error handlers,
metrics and routers are wired here and nothing runs at import time. `backend_factory` and `sync_factory`
(the audio-visual sync model) let a caller run the same service on other real backends (tests use the
in-process ONNX Runtime ones); by default both are Triton over gRPC. Every endpoint but the health
probes needs the service token (preprocessor.auth).

Spooled uploads a crash left behind (the service removes its own after each analysis) are swept at start
and every ``upload_sweep_interval_s``: files in the spool folder older than ``upload_orphan_age_s``, longer
than any analysis (deepfake.uploads.sweep_orphan_uploads, as the gateway does for its folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from deepfake.api_errors import install_error_handlers
from deepfake.http_metrics import install_request_metrics
from deepfake.uploads import sweep_orphan_uploads
from preprocessor.auth import ServiceTokenMiddleware
from preprocessor.routers import analyze, health, streams
from preprocessor.service import AnalysisService, BackendFactory, SyncFactory
from preprocessor.service_metrics import ServiceMetrics
from preprocessor.service_settings import ServiceSettings

log = logging.getLogger(__name__)


async def sweep_uploads(settings: ServiceSettings) -> list[Path]:
    """Delete orphaned spool files (older than upload_orphan_age_s); a failure is logged, never raised."""
    folder = settings.spool_dir()
    try:
        removed = await asyncio.to_thread(sweep_orphan_uploads, folder, settings.upload_orphan_age_s)
    except OSError as exc:  # an unreadable folder must not stop the service; the next sweep retries
        log.warning("upload sweep of %s failed: %s", folder, exc)
        return []
    if removed:
        log.info(
            "removed %d orphaned upload file(s) older than %g s from %s",
            len(removed),
            settings.upload_orphan_age_s,
            folder,
        )
    return removed


async def _sweep_periodically(settings: ServiceSettings) -> None:
    while True:
        await asyncio.sleep(settings.upload_sweep_interval_s)
        await sweep_uploads(settings)


def create_app(
    settings: ServiceSettings | None = None,
    backend_factory: BackendFactory | None = None,
    sync_factory: SyncFactory | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings()
    service = AnalysisService(settings, backend_factory, sync_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sweep_uploads(settings)
        sweeper = asyncio.create_task(_sweep_periodically(settings))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            service.close()

    app = FastAPI(
        title="Deepfake preprocessor",
        version="1",
        summary="Internal service: video -> face clips -> Triton -> aggregated result.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = ServiceMetrics()
    install_error_handlers(app)
    install_request_metrics(app, app.state.metrics.requests, app.state.metrics.latency)
    app.include_router(health.router)
    app.include_router(analyze.router)
    app.include_router(streams.router)
    # Outermost, so it also guards /docs, /openapi.json and unknown paths (preprocessor.auth).
    app.add_middleware(ServiceTokenMiddleware, token=settings.token())
    if settings.token() is None:
        log.warning("no DEEPFAKE_SERVICE_TOKEN: only loopback callers are served")
    return app
