"""In-process ONNX Runtime backend: the model runs inside the CLI or evaluation process, no server.

Why a backend of its own: a laptop with no GPU and no services must still answer `deepfake detect`.
The model describes itself (ONNX metadata_props key ``deepfake``, see deepfake/contracts/metadata.py), so this
backend reads crop policy, clip length and calibration from the file instead of from code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deepfake.contracts.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_BLEND,
    OUTPUT_CLIP,
    OUTPUT_FRAMES,
    ModelMeta,
)
from deepfake.contracts.schemas import ModelInfo
from inference.backend import ClipOutputs


class ModelLoadError(Exception):
    """The model file is missing or does not follow the model contract; the message says what to do."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Checksum reported with every result, so a verdict can be traced to the exact model file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_model_meta(session: ort.InferenceSession, path: Path) -> ModelMeta:
    """The ModelMeta stored in the ONNX file; a model without it cannot be fed correctly, so refuse it."""
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ModelLoadError(
            f"{path} has no {METADATA_KEY!r} metadata (crop policy, clip length, calibration); "
            "export the model with training/export.py, which writes it"
        )
    try:
        return ModelMeta.from_json(props[METADATA_KEY])
    except ValueError as exc:
        raise ModelLoadError(f"{path}: invalid {METADATA_KEY!r} metadata: {exc}") from exc


def onnx_session(model_path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with explicit thread counts (the default grabs every core, which fights the decoder
    and other jobs); ModelLoadError for a file onnxruntime cannot load. Both in-process models use it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(f"cannot load ONNX model {model_path}: {exc}") from exc


class OnnxBackend:
    """InferenceBackend over an onnxruntime CPU session."""

    def __init__(self, model_path: Path, threads: int = 2) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelLoadError(
                f"model file not found: {model_path}. Train/export one (make export) or pass --model PATH "
                "(env DEEPFAKE_MODEL_PATH)"
            )
        self._session = onnx_session(model_path, threads)
        self._check_contract(model_path)
        self.meta = read_model_meta(self._session, model_path)
        self.info = ModelInfo(
            name=self.meta.name,
            version=self.meta.version,
            sha256=file_sha256(model_path),
            backend="onnxruntime",
        )
        self.model_path = model_path

    def _check_contract(self, path: Path) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or inputs[INPUT_NAME].type != "tensor(uint8)":
            raise ModelLoadError(f"{path}: expected a uint8 input named {INPUT_NAME!r}, found {list(inputs)}")
        missing = {OUTPUT_CLIP, OUTPUT_FRAMES} - outputs
        if missing:
            raise ModelLoadError(f"{path}: missing outputs {sorted(missing)}; found {sorted(outputs)}")
        self._outputs = [OUTPUT_CLIP, OUTPUT_FRAMES] + ([OUTPUT_BLEND] if OUTPUT_BLEND in outputs else [])

    def infer(self, clips: np.ndarray) -> ClipOutputs:
        size = self.meta.crop.size
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[2:] != (size, size, 3):
            raise ValueError(
                f"clips must be uint8 [B, T, {size}, {size}, 3]; got {clips.dtype} {list(clips.shape)}"
            )
        results = self._session.run(self._outputs, {INPUT_NAME: np.ascontiguousarray(clips)})
        return ClipOutputs(
            clip_logits=np.asarray(results[0], dtype=np.float32).reshape(clips.shape[0]),
            frame_logits=np.asarray(results[1], dtype=np.float32).reshape(clips.shape[:2]),
            blend_maps=np.asarray(results[2], dtype=np.float32) if len(results) > 2 else None,
        )

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
