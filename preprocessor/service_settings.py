"""The preprocessor service's settings: one object, environment variables with the ``DEEPFAKE_`` prefix.

WHY a subclass of PipelineSettings: the service and the CLI must analyse a video identically and read
the same variables, so the service's settings *are* the pipeline settings (``DEEPFAKE_THREADS``,
``DEEPFAKE_MAX_BYTES``, ``DEEPFAKE_MAX_DURATION_S``, frames, thresholds...) plus what only the service
has: where Triton is, how many analyses run at once, where uploads spool, and the service token.
Earlier the service kept its own copies of the limits and silently ignored the pipeline's names.

The old service-only names ``DEEPFAKE_THREADS_PER_WORKER`` and ``DEEPFAKE_MAX_UPLOAD_BYTES`` are no
longer read: the second is the gateway's upload limit, so one environment gave one variable two meanings.

Service token (``DEEPFAKE_SERVICE_TOKEN``, declared once in deepfake.settings for both services): every
endpoint but ``/healthz`` and ``/readyz`` requires ``Authorization: Bearer <token>``. Without a token
configured the service answers only loopback peers (127.0.0.0/8, ::1), so a development run on one
machine needs nothing and a pod or container reachable over a network refuses everyone until a token is
set (preprocessor.auth).

Uploads: the same names as the gateway's for the same rules: ``DEEPFAKE_UPLOAD_READ_TIMEOUT_S`` (a body
that stalls ends with 408 ``upload_timeout``), ``DEEPFAKE_UPLOAD_ORPHAN_AGE_S`` and
``DEEPFAKE_UPLOAD_SWEEP_INTERVAL_S`` (spooled files a crash left behind are swept at start and on a
timer; preprocessor.app).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from deepfake.settings import ServiceTokenSettings
from deepfake.uploads import UploadSpoolSettings
from preprocessor.settings import PipelineSettings


class ServiceSettings(PipelineSettings, ServiceTokenSettings, UploadSpoolSettings):
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    model_name: str = Field("deepfake_detector", description="Model name on Triton.")
    sync_model_name: str = Field("av_sync", description="The audio-visual sync model's name on Triton.")
    triton_timeout_s: float = Field(30.0, gt=0, description="Timeout of each Triton call.")
    triton_retries: int = Field(2, ge=0, description="Retries of a Triton call that failed as unreachable.")
    workers: int = Field(1, ge=1, le=64, description="Analyses that run at the same time.")
    queue_size: int = Field(
        8, ge=0, description="Analyses that may wait for a worker; more get 503 + Retry-After."
    )
    max_streams: int = Field(
        4,
        ge=0,
        description="Live streams (/v1/streams) analysed at once, each on its own thread; more are refused "
        "(close code 4503).",
    )
    upload_dir: Path | None = Field(
        None,
        description="Where uploads are spooled; None: <system temp dir>/deepfake-preprocessor. Not the "
        "gateway's upload folder: the sweep below would remove its queued jobs' files.",
    )
    memory_budget_mb: int = Field(
        3072,
        ge=64,
        description="Memory the concurrent analyses may reserve together, in MiB (preprocessor."
        "memory_budget: each reserves an estimate from its frame size and pixel format and waits for room; "
        "one that cannot fit alone is refused with too_large_frame). Keep it about 1 GiB under the memory "
        "limit (the process itself, its models and upload buffers take the rest).",
    )

    def spool_dir(self) -> Path:
        """Where uploads are spooled (and swept)."""
        return self.upload_dir or Path(tempfile.gettempdir()) / "deepfake-preprocessor"
