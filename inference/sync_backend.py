"""The audio-visual sync model's runtimes: in-process ONNX Runtime (CLI) and Triton (the services).

Both implement preprocessor.audio_visual.SyncModel: ``sync_logits(mouth, mel)`` with mouth crops uint8
[N, T, 48, 96] and log-mel windows float32 [N, K, 80, 64] (K audio offsets per video window) -> float32
[N, K]. As for the visual model (inference/onnx_backend.py, inference/triton_backend.py), the model
describes itself: SyncMeta (offsets, clip length, threshold, fusion combiner) is one JSON string under
``deepfake_av_meta``, in the ONNX file's metadata_props and in config.pbtxt's parameters, so both
runtimes read the audio at exactly the offsets training used. ``sync_config`` builds that config.pbtxt
(written by inference.triton_launcher.model_config_text, the one writer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2

from deepfake.schemas import ModelInfo
from inference.metadata import AV_INPUT_MEL, AV_INPUT_MOUTH, AV_METADATA_KEY, AV_OUTPUT, SyncMeta
from inference.onnx_backend import ModelLoadError, file_sha256, onnx_session
from inference.triton_backend import TritonModel, TritonModelError

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


def sync_config(meta: SyncMeta, max_batch_size: int = 16) -> model_config_pb2.ModelConfig:
    """The sync model's Triton config (platform onnxruntime_onnx on the NGC image, dynamic batching, the
    metadata parameter); write it with inference.triton_launcher.model_config_text. With max_batch_size > 0
    Triton's dims leave out the batch axis: mouth [T, 48, 96] (T = clip_len, fixed in the exported graph),
    mel [K, 80, 64] (K: the candidate offsets, dynamic), sync_logits [K]."""
    pb = model_config_pb2
    config = pb.ModelConfig(name=SYNC_MODEL_NAME, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    config.input.add(name=AV_INPUT_MOUTH, data_type=pb.TYPE_UINT8, dims=[meta.clip_len, *meta.mouth])
    config.input.add(name=AV_INPUT_MEL, data_type=pb.TYPE_FP32, dims=[-1, meta.n_mels, meta.mel_frames])
    config.output.add(name=AV_OUTPUT, data_type=pb.TYPE_FP32, dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    config.parameters[AV_METADATA_KEY].string_value = meta.to_json()
    return config


def read_sync_meta(session: ort.InferenceSession, path: Path) -> SyncMeta:
    """The SyncMeta stored in the ONNX file; a model without it cannot be fed correctly, so refuse it."""
    props = session.get_modelmeta().custom_metadata_map
    if AV_METADATA_KEY not in props:
        raise ModelLoadError(f"{path} has no {AV_METADATA_KEY!r} metadata; export it with {SYNC_EXPORTER}")
    return sync_meta_from_json(props[AV_METADATA_KEY], str(path))


def write_sync_config(model_dir: Path, max_batch_size: int = 16) -> Path:
    """``<model_dir>/config.pbtxt`` for ``<model_dir>/1/model.onnx``, its metadata read from the file."""
    from inference.triton_launcher import model_config_text

    model_path = model_dir / "1" / "model.onnx"
    meta = read_sync_meta(onnx_session(model_path, threads=1), model_path)
    target = model_dir / "config.pbtxt"
    target.write_text(model_config_text(sync_config(meta, max_batch_size)))
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m inference.sync_backend [MODEL_DIR]``: (re)write the sync model's config.pbtxt."""
    import argparse

    from preprocessor.settings import DEFAULT_SYNC_MODEL_PATH

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir", nargs="?", type=Path, default=DEFAULT_SYNC_MODEL_PATH.parents[1])
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    print(write_sync_config(args.model_dir, args.max_batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
