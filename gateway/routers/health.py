"""Liveness, readiness (ready only when the preprocessor is) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deepfake.api_errors import ApiError, error_responses_doc

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the preprocessor (and so Triton) is ready",
    responses=error_responses_doc("not_ready"),
)
async def readyz(request: Request) -> dict[str, str]:
    ready, reason = await request.app.state.preprocessor.readiness()
    if not ready:
        raise ApiError("not_ready", reason)
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
