"""The gateway's typed FastAPI dependencies: what a route needs, declared in its signature.

WHY: routes used to pull everything out of ``request.app.state`` (untyped, invisible in the signature).
Here (with deepfake.app_state) is the one place that reads it; a route takes ``store: Store`` or ``owner:
Owner`` (FastAPI's ``Annotated[..., Depends(...)]``) and a type checker sees what it gets.
``HTTPConnection`` makes each dependency work for HTTP and WebSocket routes alike.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from deepfake.app_state import app_state
from gateway.auth import require_api_key
from gateway.callbacks import CallbackPolicy
from gateway.evidence import EvidenceStore
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore
from gateway.metrics import GatewayMetrics
from gateway.preprocessor_client import PreprocessorClient
from gateway.settings import GatewaySettings


def get_base_url(conn: HTTPConnection) -> str:
    """The base of the absolute URLs in answers: PUBLIC_URL, else the URL this request came in on."""
    settings: GatewaySettings = conn.app.state.settings
    return settings.base_url_for(str(conn.base_url))


Settings = Annotated[GatewaySettings, Depends(app_state("settings"))]
Store = Annotated[JobStore, Depends(app_state("store"))]
Runner = Annotated[JobRunner, Depends(app_state("runner"))]
Evidence = Annotated[EvidenceStore, Depends(app_state("evidence"))]
Preprocessor = Annotated[PreprocessorClient, Depends(app_state("preprocessor"))]
Metrics = Annotated[GatewayMetrics, Depends(app_state("metrics"))]
Callbacks = Annotated[CallbackPolicy, Depends(app_state("callback_policy"))]
# Live streams open per owner (/v1/streams), shared by this gateway's connections.
OpenStreams = Annotated[dict[str, int], Depends(app_state("open_streams"))]
BaseUrl = Annotated[str, Depends(get_base_url)]
# The caller's owner id (API key checked, rate limit applied: gateway.auth).
Owner = Annotated[str, Depends(require_api_key)]
