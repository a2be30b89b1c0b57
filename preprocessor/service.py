"""The preprocessor service's engine: bounded concurrent analyses of uploaded videos through Triton.

WHY this shape:
- Concurrency is bounded twice: `workers` threads run analyses (each keeps its own Pipeline, so face
  detector sessions are never shared between threads), and at most `queue_size` more requests may wait.
  Beyond that a request is refused at once with 503 + Retry-After, instead of piling up threads.
- The Triton backend is created lazily and shared (the gRPC client is thread-safe): the service starts
  and answers /healthz while Triton is still loading, and /readyz says when it can work.
- Memory is bounded too: before it gets a worker, an analysis reserves an estimate of its peak memory
  (from the declared frame size and pixel format) in a budget shared by all workers
  (``memory_budget_mb``, preprocessor.memory_budget), and waits on the event loop until it fits.
- The same Pipeline as the CLI runs the analysis; only the backends differ. The audio-visual sync model
  is a second backend beside the visual one (``sync_factory``, Triton's ``av_sync`` by default), created
  with it and shared the same way; ``DEEPFAKE_AUDIO_VISUAL`` unset means "use it when Triton serves it".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deepfake.contracts.errors import ServiceError
from deepfake.contracts.schemas import DetectionResult
from inference.backend import InferenceBackend
from inference.sync_backend import SyncBackend
from inference.triton_backend import (
    TritonBackend,
    TritonModelError,
    TritonModelNotServedError,
    TritonSyncModel,
    TritonUnavailableError,
)
from preprocessor.detectors import available_detectors
from preprocessor.errors import VideoError
from preprocessor.memory_budget import MemoryBudget, analysis_cost
from preprocessor.pipeline import Pipeline
from preprocessor.probe import first_frame_format
from preprocessor.service_settings import ServiceSettings
from preprocessor.settings import PipelineSettings

log = logging.getLogger(__name__)
BackendFactory = Callable[[], InferenceBackend]
SyncFactory = Callable[[], SyncBackend | None]  # None: the audio-visual signal is off
ProgressCallback = Callable[[float], None]
# (start, share) of overall progress per pipeline stage.
STAGE_SHARES = {"detect": (0.0, 0.85), "infer": (0.85, 0.15), "done": (1.0, 0.0)}


class ServiceBusyError(ServiceError):
    """All workers are busy and the waiting queue is full: 503 ``busy`` with Retry-After."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "busy",
            "all analysis workers are busy and the queue is full; retry later",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


def triton_backend_factory(settings: ServiceSettings) -> BackendFactory:
    def create() -> InferenceBackend:
        return TritonBackend(
            url=settings.triton_url,
            model_name=settings.model_name,
            timeout_s=settings.triton_timeout_s,
            retries=settings.triton_retries,
        )

    return create


def triton_sync_factory(settings: ServiceSettings) -> SyncFactory:
    """The sync model on the same Triton server; off when DEEPFAKE_AUDIO_VISUAL=false, and by default
    (unset) also when Triton does not serve ``sync_model_name``. Asked for (true) and not served: an error
    (503 inference_unavailable) rather than verdicts silently without the audio signal."""

    def create() -> SyncBackend | None:
        if settings.audio_visual is False:
            return None
        try:
            return TritonSyncModel(
                url=settings.triton_url,
                model_name=settings.sync_model_name,
                timeout_s=settings.triton_timeout_s,
                retries=settings.triton_retries,
            )
        except TritonModelNotServedError:
            if settings.audio_visual:
                raise
            log.info("Triton serves no model %r: the audio-visual signal is off", settings.sync_model_name)
            return None

    return create


def pipeline_settings(settings: ServiceSettings) -> PipelineSettings:
    """The pipeline settings the service analyses with: its own settings object (a PipelineSettings), so
    DEEPFAKE_THREADS, DEEPFAKE_MAX_BYTES, DEEPFAKE_MAX_DURATION_S... mean what they mean for the CLI."""
    return settings


class AnalysisService:
    """Owns the backend, the worker threads and their pipelines."""

    def __init__(
        self,
        settings: ServiceSettings,
        backend_factory: BackendFactory | None = None,
        sync_factory: SyncFactory | None = None,
    ) -> None:
        """``backend_factory``/``sync_factory``: the visual and sync model runtimes; both default to Triton.
        A caller that passes its own visual backend and no sync factory runs without the audio signal."""
        self.settings = settings
        self.pipeline_settings = pipeline_settings(settings)
        detectors = available_detectors()
        if self.pipeline_settings.detector not in detectors:
            # Refuse to start rather than answer every request with a 500.
            raise ValueError(
                f"DEEPFAKE_DETECTOR={self.pipeline_settings.detector!r} is not a face detector; "
                f"choose one of {', '.join(detectors)}"
            )
        self._backend_factory = backend_factory or triton_backend_factory(settings)
        if sync_factory is None:
            sync_factory = triton_sync_factory(settings) if backend_factory is None else lambda: None
        self._sync_factory = sync_factory
        self._backend: InferenceBackend | None = None
        self._sync_model: SyncBackend | None = None
        self._backend_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="analysis")
        self._local = threading.local()
        self.admitted = 0  # running + waiting, changed only on the event loop thread
        self.memory = MemoryBudget(settings.memory_budget_mb * 1024**2)
        self._format_lock = threading.Lock()
        self.running = 0  # changed on worker threads, under _count_lock
        self.streams = 0  # live streams open (/v1/streams), changed only on the event loop thread
        self._count_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.settings.workers + self.settings.queue_size

    def backend(self) -> InferenceBackend:
        """The shared backend, created on first use; raises TritonUnavailableError while Triton is down."""
        with self._backend_lock:
            if self._backend is None:
                backend = self._backend_factory()
                try:
                    self._sync_model = self._sync_factory()
                except BaseException:
                    backend.close()  # the next call creates both again
                    raise
                self._backend = backend
                for model in (backend, self._sync_model):
                    if model is not None:
                        log.info(
                            "model %s version %s via %s",
                            model.info.name,
                            model.info.version,
                            model.info.backend,
                        )
            return self._backend

    def sync_model(self) -> SyncBackend | None:
        """The shared audio-visual sync model (None: the signal is off), created with the backend."""
        self.backend()
        return self._sync_model

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): ready when the model can be reached and reports ready."""
        backend = self._backend
        if backend is None:
            # A probe must answer quickly: if another request is already connecting, say so.
            if not self._backend_lock.acquire(blocking=False):
                return False, "connecting to the inference server"
            self._backend_lock.release()
            try:
                backend = self.backend()
            except (TritonUnavailableError, TritonModelError) as exc:
                return False, str(exc)
        for model in (backend, self._sync_model):
            is_ready = getattr(model, "is_ready", None)
            if is_ready is not None and not is_ready():
                return False, f"the model {model.info.name!r} is not ready on Triton"  # type: ignore[union-attr]
        return True, "ready"

    def stream_pipeline(self) -> Pipeline:
        """A Pipeline of its own for one live stream (its detector is used by that stream's thread only),
        on the shared backend and sync model; raises TritonUnavailableError while Triton is down."""
        return Pipeline(self.pipeline_settings, self.backend(), sync_model=self.sync_model())

    def _pipeline(self) -> Pipeline:
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = Pipeline(self.pipeline_settings, self.backend(), sync_model=self.sync_model())
            self._local.pipeline = pipeline
        return pipeline

    def _run(
        self, path: Path, filename: str | None, progress: ProgressCallback | None, evidence: bool
    ) -> DetectionResult:
        def stage_progress(stage: str, fraction: float) -> None:
            # The pipeline reports per stage; face detection dominates the time, inference is the rest.
            start, share = STAGE_SHARES.get(stage, (0.0, 0.0))
            progress(min(1.0, start + share * fraction))  # type: ignore[misc]

        result = self._pipeline().analyze(
            path, progress=stage_progress if progress else None, evidence=evidence
        )
        if filename is not None:
            result.path = filename
        return result

    async def run_analysis(
        self,
        path: Path,
        filename: str | None = None,
        progress: ProgressCallback | None = None,
        evidence: bool = False,
    ) -> DetectionResult:
        """Analyse one video on a worker thread; raise ServiceBusyError when over capacity. ``evidence``:
        tracks carry their evidence images as data URIs (the gateway stores them with the job)."""
        if self.admitted >= self.capacity:
            raise ServiceBusyError(retry_after_s=max(1, self.settings.queue_size))
        self.admitted += 1
        try:
            cost = await asyncio.to_thread(self._memory_cost, path)
            loop = asyncio.get_running_loop()

            def job() -> DetectionResult:
                with self._count_lock:
                    self.running += 1
                try:
                    return self._run(path, filename, progress, evidence)
                finally:
                    with self._count_lock:
                        self.running -= 1

            async with self.memory.hold(cost):
                return await loop.run_in_executor(self._executor, job)
        finally:
            self.admitted -= 1

    def _memory_cost(self, path: Path) -> int:
        """The bytes this analysis reserves; VideoError too_large_frame when it could never fit. A file the
        probe refuses (frames over the pixel limit, unreadable) reserves nothing: the pipeline says why."""
        with self._format_lock:  # one frame decoded outside any reservation at a time
            frame = first_frame_format(path, self.settings.max_frame_pixels)
        if frame is None:
            return 0
        width, height, pix_fmt = frame
        cost = analysis_cost(width, height, pix_fmt)
        if not self.memory.fits_alone(cost):
            raise VideoError(
                "too_large_frame",
                f"frames of {width}x{height} pixels in {pix_fmt} need about "
                f"{cost / 1024**3:.1f} GiB to analyse, more than this service may use "
                f"({self.settings.memory_budget_mb / 1024:.1f} GiB); scale the video down or convert it "
                "to 8-bit 4:2:0, e.g. ffmpeg -vf scale=-2:2160 -pix_fmt yuv420p",
                width=width,
                height=height,
                pix_fmt=pix_fmt,
                estimated_bytes=cost,
                memory_budget_mb=self.settings.memory_budget_mb,
            )
        return cost

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for model in (self._backend, self._sync_model):
            if model is not None:
                model.close()
