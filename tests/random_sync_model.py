"""A tiny random-weight audio-visual sync model with the deployed contract: part A's SyncNet in its
``tiny`` config (training/sync_model.py), exported by training/export_sync.py's own export.

Why: the sync backends (ONNX Runtime, Triton), the pipeline's audio-visual step and the services must be
testable before (and independently of) the trained model. The file has the shipped graph, names, dtypes
and axes (mouth uint8 [N, T=clip_len, 48, 96], mel float32 [N, K, 80, 64] -> sync_logits float32 [N, K]) and
its SyncMeta under ``deepfake_av_meta``, with a score rule and a combiner so a track with speech is scored
and fused. :func:`reference_sync_logits` runs the same torch module, so a test can check that the right
mouths and mel windows reached the right outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfake.contracts.metadata import SyncMeta

TEST_CALIBRATION = {
    "score_coef": {"intercept": 0.0, "plausible_conf": -1.0, "implausible_margin": 1.0},
    "combiner": {"intercept": -0.1, "visual": 1.0, "audio_visual": 0.8},
    "threshold": 0.55,
}


def default_sync_meta(config: str = "tiny") -> SyncMeta:
    """The metadata export_sync writes for ``config``, with the test calibration, under a test name."""
    from training.export_sync import build_sync_meta
    from training.sync_model import CONFIGS

    meta = build_sync_meta(
        CONFIGS[config], TEST_CALIBRATION, "test", "none: random weights for plumbing tests"
    )
    return meta.model_copy(update={"name": "random_test_sync_model"})


def tiny_sync_net(seed: int = 0, config: str = "tiny"):
    """The SyncNet of ``config`` (``tiny`` for tests; ``small`` is the shipped architecture, what the
    benchmark's stand-in uses) with the random weights of ``seed`` (eval mode)."""
    import torch

    from training.sync_model import CONFIGS, SyncNet

    torch.manual_seed(seed)
    return SyncNet(CONFIGS[config]).eval()


def write_random_sync_model(
    path: Path, meta: SyncMeta | None = None, seed: int = 0, config: str = "tiny"
) -> Path:
    """Export the SyncNet of ``config`` and ``seed`` to ``path`` (parents created) with ``meta``."""
    from training.export_sync import export_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(tiny_sync_net(seed, config), path, meta or default_sync_meta(config))
    return path


def reference_sync_logits(mouth: np.ndarray, mel: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the exported model must output for ``mouth`` and ``mel``: the torch module itself."""
    import torch

    with torch.no_grad():
        return tiny_sync_net(seed)(torch.from_numpy(mouth), torch.from_numpy(mel)).numpy()
