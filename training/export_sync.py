"""Export the sync model to ONNX for serving: ``python -m training.export_sync`` writes
``model_repository/av_sync/1/model.onnx`` from runs/sync/all/checkpoint.pt.

- inputs ``mouth`` uint8 [N, T, 48, 96] (T = clip_len, fixed) and ``mel`` float32 [N, K, 80, 64], with
  dynamic N and K; output ``sync_logits`` float32 [N, K] (raw logits; preprocessor/audio_visual.py turns
  a track's logits into its score);
- the SyncMeta JSON (deepfake/contracts/metadata.py: feature sizes, offsets, the decision rule's constants,
  the fitted score coefficients, combiner and threshold from runs/sync/eval.json) under the ONNX
  metadata_props key ``deepfake_av_meta``;
- the export is checked against torch in ONNX Runtime (max abs difference of the logits under 1e-3 over
  several N and K) before it replaces the installed file, as training/export.py does; opset 17, the legacy
  TorchScript exporter, as there.

``--model tiny --random`` exports a random-init tiny model (tests build their own file this way).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from deepfake.contracts.metadata import AV_INPUT_MEL, AV_INPUT_MOUTH, AV_METADATA_KEY, AV_OUTPUT, SyncMeta
from preprocessor.audio import HOP_S, MEL_FRAMES, MIN_SPEECH_FRACTION, N_MELS, SAMPLE_RATE
from preprocessor.audio_visual import OFFSETS_S
from preprocessor.mouth import MOUTH_H, MOUTH_W
from training.config import REPO_ROOT
from training.export import MAX_ABS_DIFF, OPSET, install_verified, stamp_metadata
from training.sync_model import CONFIGS, SyncConfig, SyncNet

MODEL_NAME = "av_sync"


def build_sync_meta(
    cfg: SyncConfig, calibration: dict | None, version: str, training_data: str = ""
) -> SyncMeta:
    """The model's metadata: sizes from the code that makes its inputs, the decision rule's fitted
    coefficients from training/sync_eval.py's out-of-fold fit (``calibration``: runs/sync/eval.json)."""
    cal = calibration or {}
    return SyncMeta(
        name=MODEL_NAME,
        version=version,
        sample_rate=SAMPLE_RATE,
        n_mels=N_MELS,
        hop_s=HOP_S,
        mel_frames=MEL_FRAMES,
        mouth=(MOUTH_H, MOUTH_W),
        clip_len=cfg.clip_len,
        offsets_s=list(OFFSETS_S),
        min_speech_fraction=MIN_SPEECH_FRACTION,
        score_coef=cal.get("score_coef", {}),
        combiner=cal.get("combiner", {}),
        threshold=float(cal.get("threshold", 0.5)),
        training_data=training_data,
        metrics=cal.get("metrics", {}),
    )


def export_onnx(model: SyncNet, path: Path, meta: SyncMeta) -> None:
    """Trace the model with dynamic N and K and store the metadata in the file."""
    model = model.eval()
    t = model.cfg.clip_len
    mouth = torch.randint(0, 256, (2, t, MOUTH_H, MOUTH_W), dtype=torch.uint8)
    mel = torch.randn(2, 3, N_MELS, MEL_FRAMES)
    torch.onnx.export(
        model,
        (mouth, mel),
        str(path),
        input_names=[AV_INPUT_MOUTH, AV_INPUT_MEL],
        output_names=[AV_OUTPUT],
        dynamic_axes={AV_INPUT_MOUTH: {0: "n"}, AV_INPUT_MEL: {0: "n", 1: "k"}, AV_OUTPUT: {0: "n", 1: "k"}},
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    stamp_metadata(
        path,
        AV_METADATA_KEY,
        meta.to_json(),
        "Audio-visual sync: uint8 mouth crops [N,T,48,96], log-mel [N,K,80,64] -> logits [N,K]",
    )


def verify_onnx(model: SyncNet, path: Path, seed: int = 0) -> float:
    """Max abs difference of ONNX Runtime vs torch over several N and K; raises at MAX_ABS_DIFF or more."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    t = model.cfg.clip_len
    worst = 0.0
    for n, k in ((1, 1), (3, len(OFFSETS_S)), (2, 5)):
        mouth = rng.integers(0, 256, (n, t, MOUTH_H, MOUTH_W), dtype=np.uint8)
        mel = rng.normal(-8.0, 4.0, (n, k, N_MELS, MEL_FRAMES)).astype(np.float32)
        with torch.no_grad():
            ref = model.eval()(torch.from_numpy(mouth), torch.from_numpy(mel)).numpy()
        (got,) = sess.run([AV_OUTPUT], {AV_INPUT_MOUTH: mouth, AV_INPUT_MEL: mel})
        if got.shape != (n, k):
            raise RuntimeError(f"ONNX output shape {got.shape} wrong for N={n} K={k}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst >= MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX and torch disagree: max abs diff {worst:.2e} >= {MAX_ABS_DIFF}")
    return worst


def export(model: SyncNet, meta: SyncMeta, repo: Path) -> dict:
    """Export, verify and install into ``repo/av_sync/1/model.onnx``, then write its Triton
    ``config.pbtxt`` from the installed file's metadata (so the config never goes stale); a summary."""
    from inference.triton_launcher import write_sync_config  # Triton's protobuf schema: the serve extra

    installed = install_verified(
        repo / MODEL_NAME / "1" / "model.onnx",
        lambda p: export_onnx(model, p, meta),
        lambda p: verify_onnx(model, p),
    )
    config = write_sync_config(repo / MODEL_NAME)
    return {**installed, "config": str(config), "meta": json.loads(meta.to_json())}


def main(argv: list[str] | None = None) -> None:
    from training.train_sync import load_sync, run_dir

    ap = argparse.ArgumentParser(description="export the sync model to ONNX (model_repository/av_sync)")
    ap.add_argument("checkpoint", type=Path, nargs="?", default=run_dir(None) / "checkpoint.pt")
    ap.add_argument("--repo", type=Path, default=REPO_ROOT / "model_repository")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--calibration", type=Path, default=REPO_ROOT / "runs" / "sync" / "eval.json")
    ap.add_argument("--model", default="small", choices=sorted(CONFIGS), help="with --random: the config")
    ap.add_argument("--random", action="store_true", help="export a random-init model (tests)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.random:
        torch.manual_seed(0)
        model, data = SyncNet(CONFIGS[args.model]), "random init (tests)"
    else:
        if not args.checkpoint.is_file():
            raise SystemExit(f"checkpoint not found: {args.checkpoint} (python -m training.train_sync --all)")
        model = load_sync(args.checkpoint)
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        data = f"{len(state['train_videos'])} real dev videos with speech (MANIFEST.tsv), self-supervised"
    cal = json.loads(args.calibration.read_text()) if args.calibration.is_file() and not args.random else None
    if cal is None and not args.random:
        print(
            f"warning: {args.calibration} missing: no score coefficients or combiner (run training.sync_eval)"
        )
    meta = build_sync_meta(model.cfg, cal, args.version, data)
    print(json.dumps(export(model, meta, args.repo), indent=2))


if __name__ == "__main__":
    main()
