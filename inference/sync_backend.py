"""The audio-visual sync model's contract and its in-process runtime (CLI). Its Triton runtime is
inference.triton_backend.TritonSyncModel (the services), its Triton config inference.triton_launcher's
sync_config.

Both runtimes implement preprocessor.audio_visual.SyncModel: ``sync_logits(mouth, mel)`` with mouth crops
uint8 [N, T, 48, 96] and log-mel windows float32 [N, K, 80, 64] (K audio offsets per video window) ->
float32 [N, K]. As for the visual model (inference/onnx_backend.py, inference/triton_backend.py), the model
describes itself: SyncMeta (offsets, clip length, threshold, fusion combiner) is one JSON string under
``deepfake_av_meta``, in the ONNX file's metadata_props and in config.pbtxt's parameters, so both
runtimes read the audio at exactly the offsets training used. Nothing here needs the serve extra
(tritonclient): the CLI runs on the core dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from deepfake.contracts.metadata import AV_INPUT_MEL, AV_INPUT_MOUTH, AV_METADATA_KEY, AV_OUTPUT, SyncMeta
from deepfake.contracts.schemas import ModelInfo
from inference.onnx_backend import ModelLoadError, file_sha256, onnx_session

SYNC_MODEL_NAME = "av_sync"  # its folder in model_repository/ and its name on Triton
SYNC_EXPORTER = "training/export_sync.py"


class SyncBackend(Protocol):
    """preprocessor.audio_visual.SyncModel plus the model's identity for the result (``sync_model``)."""

    meta: SyncMeta
    info: ModelInfo

    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """mouth uint8 [N, T, 48, 96], mel float32 [N, K, 80, 64] -> sync logits float32 [N, K]."""
        ...

    def close(self) -> None: ...


def check_sync_inputs(meta: SyncMeta, mouth: np.ndarray, mel: np.ndarray) -> None:
    """Refuse arrays that break the contract before they reach a runtime (its errors name no shapes)."""
    height, width = meta.mouth
    if mouth.dtype != np.uint8 or mouth.ndim != 4 or mouth.shape[2:] != (height, width):
        raise ValueError(
            f"mouth must be uint8 [N, T, {height}, {width}]; got {mouth.dtype} {list(mouth.shape)}"
        )
    bands, frames = meta.n_mels, meta.mel_frames
    if mel.dtype != np.float32 or mel.ndim != 4 or mel.shape[2:] != (bands, frames) or len(mel) != len(mouth):
        raise ValueError(
            f"mel must be float32 [N={len(mouth)}, K, {bands}, {frames}]; got {mel.dtype} {list(mel.shape)}"
        )


def sync_meta_from_json(text: str, where: str) -> SyncMeta:
    try:
        return SyncMeta.from_json(text)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: invalid {AV_METADATA_KEY!r} metadata: {exc}") from exc


class OnnxSyncModel:
    """SyncModel over an onnxruntime CPU session, beside the visual OnnxBackend in the CLI."""

    def __init__(self, model_path: Path, threads: int = 2) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelLoadError(
                f"sync model file not found: {model_path}. Export one (training/export_sync.py), pass "
                "--sync-model PATH (env DEEPFAKE_SYNC_MODEL_PATH) or turn the audio signal off (--no-audio)"
            )
        self._session = onnx_session(model_path, threads)
        inputs = {i.name: i.type for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        expected = {AV_INPUT_MOUTH: "tensor(uint8)", AV_INPUT_MEL: "tensor(float)"}
        if any(inputs.get(name) != kind for name, kind in expected.items()) or AV_OUTPUT not in outputs:
            raise ModelLoadError(
                f"{model_path}: expected inputs mouth uint8 and mel float32 and output {AV_OUTPUT!r}; "
                f"found inputs {inputs} and outputs {sorted(outputs)}"
            )
        self.meta = read_sync_meta(self._session, model_path)
        self.info = ModelInfo(
            name=self.meta.name,
            version=self.meta.version,
            sha256=file_sha256(model_path),
            backend="onnxruntime",
        )

    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        check_sync_inputs(self.meta, mouth, mel)
        feed = {AV_INPUT_MOUTH: np.ascontiguousarray(mouth), AV_INPUT_MEL: np.ascontiguousarray(mel)}
        (logits,) = self._session.run([AV_OUTPUT], feed)
        return np.asarray(logits, dtype=np.float32).reshape(mel.shape[:2])

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


def read_sync_meta(session: ort.InferenceSession, path: Path) -> SyncMeta:
    """The SyncMeta stored in the ONNX file; a model without it cannot be fed correctly, so refuse it."""
    props = session.get_modelmeta().custom_metadata_map
    if AV_METADATA_KEY not in props:
        raise ModelLoadError(f"{path} has no {AV_METADATA_KEY!r} metadata; export it with {SYNC_EXPORTER}")
    return sync_meta_from_json(props[AV_METADATA_KEY], str(path))
