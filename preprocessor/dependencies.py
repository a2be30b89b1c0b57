"""The preprocessor's typed FastAPI dependencies: what a route needs, declared in its signature (the one
place that reads ``app.state``; ``HTTPConnection`` serves HTTP and WebSocket routes alike)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from preprocessor.service import AnalysisService
from preprocessor.service_metrics import ServiceMetrics
from preprocessor.service_settings import ServiceSettings


def get_settings(conn: HTTPConnection) -> ServiceSettings:
    return conn.app.state.settings


def get_service(conn: HTTPConnection) -> AnalysisService:
    return conn.app.state.service


def get_metrics(conn: HTTPConnection) -> ServiceMetrics:
    return conn.app.state.metrics


Settings = Annotated[ServiceSettings, Depends(get_settings)]
Service = Annotated[AnalysisService, Depends(get_service)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
