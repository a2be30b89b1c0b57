"""The gateway's typed FastAPI dependencies: what a route needs, declared in its signature.

WHY: routes used to pull everything out of ``request.app.state`` (untyped, invisible in the signature).
Here is the one place that reads it; a route takes ``store: Store`` or ``owner: Owner`` (FastAPI's
``Annotated[..., Depends(...)]``) and a type checker sees what it gets. ``HTTPConnection`` makes each
dependency work for HTTP and WebSocket routes alike.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.auth import require_api_key
from gateway.callbacks import CallbackPolicy
from gateway.evidence import EvidenceStore
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore
from gateway.metrics import GatewayMetrics
from gateway.preprocessor_client import PreprocessorClient
from gateway.settings import GatewaySettings


def get_settings(conn: HTTPConnection) -> GatewaySettings:
    return conn.app.state.settings


def get_store(conn: HTTPConnection) -> JobStore:
    return conn.app.state.store


def get_runner(conn: HTTPConnection) -> JobRunner:
    return conn.app.state.runner


def get_evidence(conn: HTTPConnection) -> EvidenceStore:
    return conn.app.state.evidence


def get_preprocessor(conn: HTTPConnection) -> PreprocessorClient:
    return conn.app.state.preprocessor


def get_metrics(conn: HTTPConnection) -> GatewayMetrics:
    return conn.app.state.metrics


def get_callback_policy(conn: HTTPConnection) -> CallbackPolicy:
    return conn.app.state.callback_policy


def get_open_streams(conn: HTTPConnection) -> dict[str, int]:
    """Live streams open per owner (/v1/streams), shared by this gateway's connections."""
    return conn.app.state.open_streams


def get_base_url(conn: HTTPConnection) -> str:
    """The base of the absolute URLs in answers: PUBLIC_URL, else the URL this request came in on."""
    return get_settings(conn).base_url_for(str(conn.base_url))


Settings = Annotated[GatewaySettings, Depends(get_settings)]
Store = Annotated[JobStore, Depends(get_store)]
Runner = Annotated[JobRunner, Depends(get_runner)]
Evidence = Annotated[EvidenceStore, Depends(get_evidence)]
Preprocessor = Annotated[PreprocessorClient, Depends(get_preprocessor)]
Metrics = Annotated[GatewayMetrics, Depends(get_metrics)]
Callbacks = Annotated[CallbackPolicy, Depends(get_callback_policy)]
OpenStreams = Annotated[dict[str, int], Depends(get_open_streams)]
BaseUrl = Annotated[str, Depends(get_base_url)]
# The caller's owner id (API key checked, rate limit applied: gateway.auth).
Owner = Annotated[str, Depends(require_api_key)]
