"""A tiny random-weight audio-visual sync model with the deployed contract, exported from torch to ONNX.

Why: the sync backends (ONNX Runtime, Triton), the pipeline's audio-visual step and the services must be
testable before (and independently of) the trained model. The graph has the contract's names, dtypes and
dynamic axes (mouth uint8 [N, T, 48, 96], mel float32 [N, K, 80, 64] -> sync_logits float32 [N, K]) and
its SyncMeta under ``deepfake_av_meta``. Its output depends on both inputs (mean mouth brightness times
mean mel energy per offset, through random weights), so a test can check with :func:`reference_sync_logits`
that the right mouths and mel windows reached the right outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from inference.metadata import AV_INPUT_MEL, AV_INPUT_MOUTH, AV_METADATA_KEY, AV_OUTPUT, SyncMeta

OPSET = 17


def sync_weights(seed: int = 0) -> np.ndarray:
    """The model's 3 weights for ``seed`` (float32): logit = w0 * mouth * mel + w1 * mel + w2."""
    return (np.random.default_rng(seed).standard_normal(3) * 2.0).astype(np.float32)


def default_sync_meta() -> SyncMeta:
    """Metadata for a test sync model: the defaults (offsets, clip length, windows) under a test name, with a
    score rule and a combiner, so a track with speech gets a score and it is fused."""
    return SyncMeta(
        name="random_test_sync_model",
        version="test",
        score_coef={"intercept": 0.0, "plausible_conf": -1.0, "implausible_margin": 1.0},
        combiner={"intercept": -0.1, "visual": 1.0, "audio_visual": 0.8},
        threshold=0.55,
    )


def write_random_sync_model(path: Path, meta: SyncMeta | None = None, seed: int = 0) -> Path:
    """Export the tiny torch module to ``path`` (parents created) with ``meta`` in its metadata_props."""
    import torch

    weights = torch.from_numpy(sync_weights(seed))

    class TinySync(torch.nn.Module):
        def forward(self, mouth: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
            lips = mouth.float().mean(dim=(1, 2, 3)) / 255.0  # [N]
            energy = mel.mean(dim=(2, 3))  # [N, K]
            return weights[0] * lips[:, None] * energy + weights[1] * energy + weights[2]

    meta = meta or default_sync_meta()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mouth = torch.randint(0, 256, (2, meta.clip_len, *meta.mouth), dtype=torch.uint8)
    mel = torch.randn(2, 3, meta.n_mels, meta.mel_frames)
    torch.onnx.export(
        TinySync(),
        (mouth, mel),
        str(path),
        input_names=[AV_INPUT_MOUTH, AV_INPUT_MEL],
        output_names=[AV_OUTPUT],
        dynamic_axes={
            AV_INPUT_MOUTH: {0: "n", 1: "t"},
            AV_INPUT_MEL: {0: "n", 1: "k"},
            AV_OUTPUT: {0: "n", 1: "k"},
        },
        opset_version=OPSET,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = AV_METADATA_KEY, meta.to_json()
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def reference_sync_logits(mouth: np.ndarray, mel: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the model must output for ``mouth`` [N, T, 48, 96] uint8 and ``mel`` [N, K, 80, 64], in numpy."""
    w = sync_weights(seed)
    lips = mouth.astype(np.float32).mean(axis=(1, 2, 3)) / 255.0
    energy = mel.astype(np.float32).mean(axis=(2, 3))
    return w[0] * lips[:, None] * energy + w[1] * energy + w[2]
