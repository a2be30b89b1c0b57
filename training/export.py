"""Export a trained checkpoint to ONNX + Triton's model repository layout (``make export``).

Writes ``<repo>/deepfake_detector/1/model.onnx`` and ``<repo>/deepfake_detector/config.pbtxt``:

- input ``clips`` uint8 [B, T, S, S, 3] RGB with dynamic B and T (1..clip_len); the graph casts and
  normalises, so clients send 4x less data than float32;
- outputs ``clip_logit`` [B] and ``frame_logits`` [B, T] (raw logits; calibrate with the metadata's
  temperature) and ``blend_map`` [B, T, S/8, S/8] (sigmoid probabilities of the localisation head);
- the ModelMeta JSON (crop policy, T, temperature, threshold, version, training data, metrics) under the
  key ``deepfake`` both in the ONNX metadata_props and in config.pbtxt's ``parameters``.

The legacy TorchScript exporter is used (opset 17): it handles the dynamic B/T reshapes of this model
and our hand-written attention; the export is verified against torch in ONNX Runtime before it is kept
(max abs difference on the logits below 1e-3), so a bad export never lands in the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from deepfake.contracts.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_BLEND,
    OUTPUT_CLIP,
    OUTPUT_FRAMES,
    CropPolicy,
    ModelMeta,
)
from training.config import REPO_ROOT, TrainConfig
from training.model import DeepfakeDetector, ExportWrapper
from training.weights import load_trained

MODEL_NAME = "deepfake_detector"
MAX_ABS_DIFF = 1e-3
OPSET = 17
TRAINING_DATA = (
    "DFDC face crops (crops/dfdc/train, 18,000: 9,000 real, 9,000 DFDC fakes) plus self-blended "
    "pseudo-fakes made on the fly from the real crops; calibrated on crops/dfdc/val"
)


def training_data(cfg: TrainConfig) -> str:
    """What the model learned from, in words, for the metadata."""
    if cfg.max_train_items:
        return f"{cfg.max_train_items} DFDC train crops"
    if not cfg.videos:
        return TRAINING_DATA
    held = f", except fold {cfg.video_fold} of {cfg.n_folds}" if cfg.video_fold >= 0 else ""
    return (
        f"{TRAINING_DATA.split('; calibrated')[0]}, plus the main face track of the videos of "
        f"{cfg.videos}{held} ({cfg.video_frames} sampled frames each)"
    )


def build_meta(cfg: TrainConfig, calibration: dict | None, version: str) -> ModelMeta:
    """The model's metadata: crop policy and clip length from training, temperature and threshold from
    the calibration file: training/cv.py's out-of-fold fit (shipped) or training/calibrate.py's DFDC fit."""
    cal = calibration or {}
    metrics = {}
    if calibration and "all" in calibration:  # out-of-fold figures of the recipe (training/cv.py)
        keys = ("all", "swap_vs_reals_auc", "synthesis_vs_reals_auc", "deepfacelive_halves_auc", "failures")
        metrics = {k: calibration[k] for k in keys if k in calibration}
        metrics["measured_by"] = f"python -m training.cv: {calibration.get('fitted_on', '')}"
    elif calibration:
        metrics = {k: calibration[k] for k in ("val_crops", "val_clips") if k in calibration}
        metrics["measured_by"] = "python -m training.calibrate (DFDC val; fitted there, so optimistic)"
    return ModelMeta(
        name=MODEL_NAME,
        version=version,
        clip_len=cfg.clip_len,
        crop=CropPolicy(scale=cfg.serve_crop_scale, size=cfg.image_size, shift_y=cfg.serve_shift_y),
        temperature=float(cal.get("temperature", 1.0)),
        threshold=float(cal.get("threshold", 0.5)),
        training_data=training_data(cfg),
        metrics=metrics,
    )


def export_onnx(model: DeepfakeDetector, path: Path, meta: ModelMeta, clip_len: int) -> None:
    """Trace the model to ONNX with dynamic batch and frame axes and store the metadata in the file."""
    s = model.image_size
    wrapper = ExportWrapper(model).eval()
    dummy = torch.randint(0, 256, (2, clip_len, s, s, 3), dtype=torch.uint8)
    # Not under torch.no_grad(): the legacy exporter is happiest with the model as trained
    # (ARCHITECTURE.md, Facts).
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_CLIP, OUTPUT_FRAMES, OUTPUT_BLEND],
        dynamic_axes={
            INPUT_NAME: {0: "batch", 1: "frames"},
            OUTPUT_CLIP: {0: "batch"},
            OUTPUT_FRAMES: {0: "batch", 1: "frames"},
            OUTPUT_BLEND: {0: "batch", 1: "frames"},
        },
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    stamp_metadata(
        path,
        METADATA_KEY,
        meta.to_json(),
        "Deepfake detector: uint8 RGB face clips [B,T,H,W,3] -> clip and frame logits, blend map",
    )


def stamp_metadata(path: Path, key: str, value: str, doc: str) -> None:
    """Replace an exported file's metadata_props with ``key: value`` (what the backends read the model's
    contract from), set its doc string, check and save it (both exports, one copy)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def verify_onnx(model: DeepfakeDetector, path: Path, clip_len: int, seed: int = 0) -> float:
    """Max abs difference of ONNX Runtime vs torch logits over several B and T; raises above MAX_ABS_DIFF."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    s = model.image_size
    worst = 0.0
    for b, t in ((1, 1), (3, clip_len), (2, max(1, clip_len // 2))):
        x = rng.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8)
        with torch.no_grad():
            ref = model.eval()(torch.from_numpy(x))
        got = sess.run([OUTPUT_CLIP, OUTPUT_FRAMES, OUTPUT_BLEND], {INPUT_NAME: x})
        if got[0].shape != (b,) or got[1].shape != (b, t) or got[2].shape[:2] != (b, t):
            raise RuntimeError(f"ONNX output shapes {[g.shape for g in got]} wrong for B={b} T={t}")
        diff = max(
            float(np.abs(got[0] - ref["clip_logit"].numpy()).max()),
            float(np.abs(got[1] - ref["frame_logits"].numpy()).max()),
            float(np.abs(got[2] - torch.sigmoid(ref["blend_logits"]).numpy()).max()),
        )
        worst = max(worst, diff)
    if worst >= MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX and torch disagree: max abs diff {worst:.2e} >= {MAX_ABS_DIFF}")
    return worst


def config_pbtxt(meta: ModelMeta, max_batch_size: int = 32) -> str:
    """Triton config: onnxruntime platform, dynamic batching, TensorRT FP16 on GPUs, metadata parameter,
    built as Triton's own ModelConfig message (the launcher reads and rewrites it the same way).

    With max_batch_size > 0 Triton's dims leave out the batch axis; ``clip_logit`` is [B] in the graph, so
    it is declared as dims [1] reshaped to [] (Triton's idiom for a per-item scalar).
    """
    from tritonclient.grpc import model_config_pb2 as pb

    from inference.triton_launcher import model_config_text

    s, h = meta.crop.size, meta.crop.size // 8
    config = pb.ModelConfig(name=MODEL_NAME, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    config.input.add(name=INPUT_NAME, data_type=pb.TYPE_UINT8, dims=[-1, s, s, 3])
    clip = config.output.add(name=OUTPUT_CLIP, data_type=pb.TYPE_FP32, dims=[1])
    clip.reshape.SetInParent()  # shape [] : one scalar per batch item
    config.output.add(name=OUTPUT_FRAMES, data_type=pb.TYPE_FP32, dims=[-1])
    config.output.add(name=OUTPUT_BLEND, data_type=pb.TYPE_FP32, dims=[-1, h, h])
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    trt.parameters["precision_mode"] = "FP16"
    trt.parameters["max_workspace_size_bytes"] = "1073741824"
    config.parameters[METADATA_KEY].string_value = meta.to_json()
    return model_config_text(config)


def export(
    checkpoint: Path,
    repo: Path,
    version: str = "",
    max_batch_size: int = 32,
    crop_scale: float | None = None,
    crop_shift_y: float | None = None,
    calibration_path: Path | None = None,
) -> dict:
    """Export, verify and install into ``repo``; returns a summary (paths, size, sha256, max diff).

    ``crop_scale`` / ``crop_shift_y`` override the serving crop policy saved with the checkpoint (it is
    a property of the serving detector, measured after training by ``training.crop_policy``).
    ``calibration_path`` defaults to ``calibration.json`` beside the checkpoint.
    """
    model, cfg = load_trained(checkpoint)
    if crop_scale is not None:
        cfg.serve_crop_scale = crop_scale
    if crop_shift_y is not None:
        cfg.serve_shift_y = crop_shift_y
    torch.set_num_threads(cfg.threads)
    cal_path = calibration_path or Path(checkpoint).with_name("calibration.json")
    calibration = json.loads(cal_path.read_text()) if cal_path.is_file() else None
    if calibration is None:
        print(
            f"warning: {cal_path} missing: temperature 1.0 and threshold 0.5 (run make cv or "
            "training.calibrate first)"
        )
    meta = build_meta(cfg, calibration, version or f"{cfg.name}-1")
    model_dir = repo / MODEL_NAME
    installed = install_verified(
        model_dir / "1" / "model.onnx",
        lambda p: export_onnx(model, p, meta, cfg.clip_len),
        lambda p: verify_onnx(model, p, cfg.clip_len),
    )
    (model_dir / "config.pbtxt").write_text(config_pbtxt(meta, max_batch_size))
    return {**installed, "config": str(model_dir / "config.pbtxt"), "meta": json.loads(meta.to_json())}


def install_verified(dest: Path, write: Callable[[Path], None], verify: Callable[[Path], float]) -> dict:
    """Write an ONNX file beside ``dest``, verify it (``verify`` raises on a bad export and returns the
    max abs difference), then move it into place: a bad export never replaces the installed model.
    Returns the file's path, size, sha256 and the difference."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmp_path = Path(tmp) / dest.name
        write(tmp_path)
        diff = verify(tmp_path)
        os.replace(tmp_path, dest)
    data = dest.read_bytes()
    return {
        "onnx": str(dest),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="export a trained checkpoint to ONNX + Triton model repository")
    ap.add_argument("checkpoint", type=Path, nargs="?", default=Path("runs/cpu/final.pt"))
    ap.add_argument("--repo", type=Path, default=REPO_ROOT / "model_repository")
    ap.add_argument("--version", default="", help="model version string stored in the metadata")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--crop-scale", type=float, help="serving crop scale (default: the checkpoint's config)")
    ap.add_argument("--crop-shift-y", type=float, help="serving crop shift_y (default: the checkpoint's)")
    ap.add_argument(
        "--calibration",
        type=Path,
        help="temperature + threshold JSON (default: calibration.json beside the checkpoint; the shipped "
        "model uses runs/cv/<config>/calibration.json from make cv)",
    )
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {args.checkpoint} (train first: make train)")
    print(
        json.dumps(
            export(
                args.checkpoint,
                args.repo,
                args.version,
                args.max_batch_size,
                args.crop_scale,
                args.crop_shift_y,
                args.calibration,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
