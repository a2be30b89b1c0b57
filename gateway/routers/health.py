"""Liveness, readiness (ready only when the preprocessor is) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deepfake.api_errors import ApiError, error_responses_doc
from gateway.dependencies import Metrics, Preprocessor

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the preprocessor (and so Triton) is ready",
    responses=error_responses_doc("not_ready"),
)
async def readyz(preprocessor: Preprocessor) -> dict[str, str]:
    ready, reason = await preprocessor.readiness()
    if not ready:
        raise ApiError("not_ready", reason)
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gateway_metrics: Metrics) -> Response:
    return Response(generate_latest(gateway_metrics.registry), media_type=CONTENT_TYPE_LATEST)
