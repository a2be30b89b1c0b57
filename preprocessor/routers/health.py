"""Liveness, readiness (Triton's model readiness) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deepfake.api_errors import ApiError, error_responses_doc
from preprocessor.dependencies import Metrics, Service

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: the model is ready on Triton", responses=error_responses_doc("not_ready")
)
async def readyz(service: Service) -> dict[str, str]:
    # The check may block on gRPC for a moment; keep it off the event loop.
    ready, reason = await asyncio.to_thread(service.readiness)
    if not ready:
        raise ApiError("not_ready", reason)
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(service: Service, service_metrics: Metrics) -> Response:
    service_metrics.running.set(service.running)
    service_metrics.admitted.set(service.admitted)
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
