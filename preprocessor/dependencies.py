"""The preprocessor's typed FastAPI dependencies: what a route needs, declared in its signature (the one
place that reads ``app.state``, through deepfake.app_state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from deepfake.app_state import app_state
from preprocessor.service import AnalysisService
from preprocessor.service_metrics import ServiceMetrics
from preprocessor.service_settings import ServiceSettings

Settings = Annotated[ServiceSettings, Depends(app_state("settings"))]
Service = Annotated[AnalysisService, Depends(app_state("service"))]
Metrics = Annotated[ServiceMetrics, Depends(app_state("metrics"))]
