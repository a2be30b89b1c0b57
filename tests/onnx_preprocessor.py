"""The real preprocessor service on the in-process ONNX Runtime backend, as a uvicorn factory.

`uvicorn --factory tests.onnx_preprocessor:create_app`: the same app as production with the model at
DEEPFAKE_MODEL_PATH (and the sync model at DEEPFAKE_SYNC_MODEL_PATH, as the CLI loads it) run by ONNX
Runtime instead of Triton, for tests that need the preprocessor as a
process of its own (several gateway processes share it) but cannot spare a tritonserver on two cores.
"""

from __future__ import annotations

from fastapi import FastAPI

from cli.commands.common import load_sync_model
from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings


def create_app() -> FastAPI:
    settings = ServiceSettings()
    return create_preprocessor_app(
        settings,
        backend_factory=lambda: OnnxBackend(settings.model_path, threads=settings.threads),
        sync_factory=lambda: load_sync_model(settings),
    )
