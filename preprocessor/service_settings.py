"""The preprocessor service's settings, one place, environment variables with the ``DEEPFAKE_`` prefix.

Pipeline knobs (frames, stride, thresholds) stay in preprocessor.settings.PipelineSettings, read from
the same environment, so the service and the CLI analyse a video identically; this class holds only what
the service adds: where Triton is, how many analyses run at once, and the upload limits.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPFAKE_", extra="ignore")

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    model_name: str = Field("deepfake_detector", description="Model name on Triton.")
    triton_timeout_s: float = Field(30.0, gt=0, description="Timeout of each Triton call.")
    triton_retries: int = Field(2, ge=0, description="Retries of a Triton call that failed as unreachable.")
    workers: int = Field(1, ge=1, le=64, description="Analyses that run at the same time.")
    queue_size: int = Field(
        8, ge=0, description="Analyses that may wait for a worker; more get 503 + Retry-After."
    )
    threads_per_worker: int = Field(1, ge=1, description="Decoder/OpenCV threads per analysis.")
    detector: str | None = Field(None, description="Face detector name; None: the pipeline's default.")
    weights_dir: Path | None = Field(None, description="Face-detector weights directory.")
    max_upload_bytes: int = Field(500 * 1024**2, ge=1, description="Largest accepted upload in bytes.")
    max_duration_s: float = Field(600.0, gt=0, description="Longest accepted video in seconds.")
    upload_dir: Path | None = Field(None, description="Where uploads are spooled; None: the system temp dir.")
