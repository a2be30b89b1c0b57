"""InferenceBackend over NVIDIA Triton (gRPC): the preprocessor service's way to reach the model.

WHY these choices:
- The model describes itself: ModelMeta (crop policy, clip length, calibration) is read from the
  model config's parameter ``deepfake`` on Triton, so the service crops exactly as training did and
  never carries its own copy of those numbers.
- uint8 clips go over the wire (ARCHITECTURE.md: float32 is four times the bytes and measurably slower).
- Every call has an explicit timeout, and only failures that mean "Triton is not reachable right now"
  are retried (a few times, with backoff: deepfake.retry); failures are told apart by their gRPC status
  code, never by their message. When it stays unreachable the caller gets
  ``TritonUnavailableError`` quickly and the service answers 503, instead of hanging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deepfake.contracts.metadata import (
    AV_INPUT_MEL,
    AV_INPUT_MOUTH,
    AV_METADATA_KEY,
    AV_OUTPUT,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_BLEND,
    OUTPUT_CLIP,
    OUTPUT_FRAMES,
    ModelMeta,
)
from deepfake.contracts.schemas import ModelInfo
from deepfake.retry import Backoff, call_with_retries
from inference.backend import ClipOutputs
from inference.onnx_backend import ModelLoadError
from inference.sync_backend import SYNC_EXPORTER, SYNC_MODEL_NAME, check_sync_inputs, sync_meta_from_json

log = logging.getLogger(__name__)
SHA256_PARAMETER = "model_sha256"  # written by inference.triton_launcher; optional on other deployments
# Triton failures classified by their gRPC status code (tritonclient's InferenceServerException carries
# str(grpc.StatusCode)), never by message text:
# - not reachable / not ready now: retried, then TritonUnavailableError (503);
OUTAGE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
# - an answer, but not from a Triton serving this model (an unknown model; a server without Triton's gRPC
#   service, e.g. an HTTP/2 endpoint answering 404): TritonUnavailableError at once, a retry cannot help;
NOT_SERVING = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED})
# - anything else (INVALID_ARGUMENT, INTERNAL, ..., or no status: a client-side failure): TritonModelError.
_STATUS_BY_NAME = {str(code): code for code in grpc.StatusCode}
T = TypeVar("T")


class TritonUnavailableError(RuntimeError):
    """Triton (or the model on it) cannot be reached or is not ready; a 503 for API clients."""


class TritonModelNotServedError(TritonUnavailableError):
    """Triton answers but does not serve the model asked for (not in its repository)."""


class TritonModelError(RuntimeError):
    """Triton answered, but the model or its config breaks the model contract; a 500, our fault."""


def grpc_status(exc: InferenceServerException) -> grpc.StatusCode | None:
    """The gRPC status code of a tritonclient failure; None when it has none (raised client-side)."""
    return _STATUS_BY_NAME.get(str(exc.status() or ""))


def _is_outage(exc: Exception) -> bool:
    return isinstance(exc, InferenceServerException) and grpc_status(exc) in OUTAGE


class TritonModel:
    """One model on Triton over gRPC: its config, explicit timeouts, bounded retries of outages and
    readiness. The visual backend (TritonBackend) and the sync model (inference/sync_backend.py) are both
    this plus their own inputs and outputs, so they retry and reconnect alike."""

    DEFAULT_MODEL = "deepfake_detector"  # each subclass: its model's name in model_repository/

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model_name: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
    ) -> None:
        model_name = model_name or self.DEFAULT_MODEL
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self.config: dict[str, Any] = self._call(
            "read the model config",
            lambda: self._client.get_model_config(model_name, as_json=True, client_timeout=timeout_s),
        )["config"]
        self.params = {
            key: value.get("string_value", "") for key, value in self.config.get("parameters", {}).items()
        }
        # 0 means "no batching" in Triton; then each request carries exactly one batch as sent.
        self.max_batch_size = int(self.config.get("max_batch_size", 0) or 0)
        self._describe()

    def _describe(self) -> None:
        """Read the model's metadata and outputs from ``config``/``params`` (each subclass its own)."""

    def model_info(self, name: str, version: str) -> ModelInfo:
        """The model's identity for results; the checksum comes from the launcher's config parameter."""
        return ModelInfo(
            name=name, version=version, sha256=self.params.get(SHA256_PARAMETER, ""), backend="triton"
        )

    def metadata_json(self, key: str, exporter: str) -> str:
        """The model's metadata JSON from its config parameter ``key``; refuse a model without it."""
        if key not in self.params:
            raise TritonModelError(
                f"Triton model {self.model_name!r} has no config parameter {key!r} (the model metadata); "
                f"export it with {exporter}, which writes config.pbtxt"
            )
        return self.params[key]

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one Triton call, retrying only outages (deepfake.retry); raise TritonUnavailableError when
        they persist or Triton does not serve the model, TritonModelError for any other failure."""

        def reconnect_and_log(exc: Exception, retry: int) -> None:
            # gRPC's own reconnect backoff grows to minutes; a fresh channel finds Triton as soon as it is
            # back.
            self._reconnect()
            log.warning("Triton %s failed (%s); retry %d/%d", what, exc, retry, self.retries)

        try:
            return call_with_retries(
                lambda _: fn(),
                attempts=self.retries + 1,
                backoff=Backoff(self.retry_backoff_s, max_s=10.0),
                retry_on=_is_outage,
                on_retry=reconnect_and_log,
            )
        except InferenceServerException as exc:
            status = grpc_status(exc)
            if status in OUTAGE:
                self._reconnect()
                raise TritonUnavailableError(
                    f"Triton at {self.url} is unavailable (could not {what} after {self.retries + 1} "
                    f"attempts, {self.timeout_s:.0f} s timeout each): {exc.message()}"
                ) from exc
            if status in NOT_SERVING:
                raise TritonModelNotServedError(
                    f"Triton at {self.url} does not serve model {self.model_name!r} ({status}): "
                    f"{exc.message()}"
                ) from exc
            raise TritonModelError(f"Triton failed to {what} ({status}): {exc.message()}") from exc

    def _reconnect(self) -> None:
        # The old client is not closed here: another worker thread may be mid-call on it; it is
        # released when the last reference goes.
        self._client = grpcclient.InferenceServerClient(url=self.url)

    def is_ready(self) -> bool:
        """Model readiness on Triton, answered within a short timeout (for /readyz)."""
        try:
            return bool(self._client.is_model_ready(self.model_name, client_timeout=min(self.timeout_s, 2.0)))
        except InferenceServerException:
            self._reconnect()
            return False

    def _run(self, inputs: list[tuple[str, np.ndarray, str]], outputs: list[str]) -> list[np.ndarray]:
        """One inference request: (name, array, Triton dtype) inputs, the named outputs as arrays."""
        tensors = []
        for name, array, dtype in inputs:
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            tensors.append(tensor)
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]

        def call() -> Any:
            return self._client.infer(
                self.model_name, tensors, outputs=requested, client_timeout=self.timeout_s
            )

        result = self._call("run inference", call)
        return [result.as_numpy(name) for name in outputs]

    def close(self) -> None:
        self._client.close()


class TritonBackend(TritonModel):
    """Runs clips on the visual model on Triton (InferenceBackend)."""

    def _describe(self) -> None:
        try:
            self.meta = ModelMeta.from_json(self.metadata_json(METADATA_KEY, "training/export.py"))
        except ValueError as exc:
            raise TritonModelError(
                f"Triton model {self.model_name!r}: invalid {METADATA_KEY!r} metadata: {exc}"
            ) from exc
        outputs = {out["name"] for out in self.config.get("output", [])}
        missing = {OUTPUT_CLIP, OUTPUT_FRAMES} - outputs
        if missing:
            raise TritonModelError(f"Triton model {self.model_name!r} lacks outputs {sorted(missing)}")
        self._outputs = [OUTPUT_CLIP, OUTPUT_FRAMES] + ([OUTPUT_BLEND] if OUTPUT_BLEND in outputs else [])
        self.info = self.model_info(self.meta.name, self.meta.version)

    def _infer_once(self, clips: np.ndarray) -> list[np.ndarray]:
        return self._run([(INPUT_NAME, clips, "UINT8")], self._outputs)

    def infer(self, clips: np.ndarray) -> ClipOutputs:
        size = self.meta.crop.size
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[2:] != (size, size, 3):
            raise ValueError(
                f"clips must be uint8 [B, T, {size}, {size}, 3]; got {clips.dtype} {list(clips.shape)}"
            )
        step = self.max_batch_size or clips.shape[0]
        parts = [self._infer_once(clips[i : i + step]) for i in range(0, clips.shape[0], step)]
        batch, length = clips.shape[:2]
        return ClipOutputs(
            clip_logits=np.concatenate([p[0].reshape(-1) for p in parts]).astype(np.float32).reshape(batch),
            frame_logits=np.concatenate([p[1].reshape(-1, length) for p in parts]).astype(np.float32),
            blend_maps=np.concatenate([p[2] for p in parts]).astype(np.float32)
            if len(self._outputs) > 2
            else None,
        )


class TritonSyncModel(TritonModel):
    """SyncModel on Triton (gRPC), the same server as the visual model, with its timeouts and retries."""

    DEFAULT_MODEL = SYNC_MODEL_NAME

    def _describe(self) -> None:
        where = f"Triton model {self.model_name!r}"
        try:
            self.meta = sync_meta_from_json(self.metadata_json(AV_METADATA_KEY, SYNC_EXPORTER), where)
        except ModelLoadError as exc:
            raise TritonModelError(str(exc)) from exc
        if AV_OUTPUT not in {out["name"] for out in self.config.get("output", [])}:
            raise TritonModelError(f"{where} lacks output {AV_OUTPUT!r}")
        self.info = self.model_info(self.meta.name, self.meta.version)

    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        check_sync_inputs(self.meta, mouth, mel)
        step = self.max_batch_size or len(mouth)
        parts = [
            self._run(
                [
                    (AV_INPUT_MOUTH, mouth[i : i + step], "UINT8"),
                    (AV_INPUT_MEL, mel[i : i + step], "FP32"),
                ],
                [AV_OUTPUT],
            )[0]
            for i in range(0, len(mouth), step)
        ]
        return np.concatenate(parts).astype(np.float32).reshape(mel.shape[:2])
