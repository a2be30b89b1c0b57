"""Convert a RetinaFace MobileNet-0.25 checkpoint (.pth) to the ONNX file the runtime detector loads.

    python -m preprocessor.detectors.retinaface_export --checkpoint mobilenet0.25_Final.pth \
        [--out DIR] [--variant auto|pytorch_retinaface|face_detector_1mb]

This is the `make weights RETINAFACE_PTH=...` step. It needs torch (the `train` extra); the result
needs only onnxruntime. Checkpoints (MIT): `mobilenet0.25_Final.pth` from biubug6/Pytorch_Retinaface
(linked from its README) or from biubug6/Face-Detector-1MB-with-landmark (its weights/ folder; the
copy in shared/data/weights is that one). Both have the same layout but different activations and
anchors, which no tensor shape reveals: `auto` recognises the known file by its SHA-256 and otherwise
assumes Pytorch_Retinaface (say --variant to be explicit). The variant and its anchors are stored in
the ONNX metadata for the runtime. The graph takes any input size, and is checked against torch
before it is saved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from preprocessor.detectors.common import default_weights_dir
from preprocessor.detectors.retinaface import BGR_MEAN, METADATA_KEY, MODEL_FILE, STEPS, VARIANCES, VARIANTS
from preprocessor.detectors.retinaface_net import load_checkpoint

OPSET = 17
# SHA-256 of checkpoints whose variant is known for certain.
KNOWN_CHECKPOINTS = {
    "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1": "face_detector_1mb",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_variant(checkpoint: Path, variant: str) -> str:
    if variant != "auto":
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown RetinaFace variant {variant!r}; choose auto or one of {', '.join(VARIANTS)}"
            )
        return variant
    return KNOWN_CHECKPOINTS.get(sha256(checkpoint), "pytorch_retinaface")


def export(checkpoint: Path, out_dir: Path, variant: str = "auto") -> Path:
    """Export `checkpoint` to out_dir/MODEL_FILE and verify it reproduces torch's outputs."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"RetinaFace checkpoint not found: {checkpoint}")
    variant = resolve_variant(checkpoint, variant)
    config = {
        "variant": variant,
        **VARIANTS[variant],
        "steps": list(STEPS),
        "variances": list(VARIANCES),
        "bgr_mean": BGR_MEAN.tolist(),
        "checkpoint_sha256": sha256(checkpoint),
    }
    model = load_checkpoint(checkpoint, leaky=VARIANTS[variant]["leaky"])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODEL_FILE
    example = torch.randn(1, 3, 320, 480) * 50
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        partial = Path(tmp) / MODEL_FILE
        # The TorchScript exporter (dynamo=False) handles the dynamic height/width simply; its
        # deprecation notice is not actionable here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(partial),
                input_names=["image"],
                output_names=["boxes", "scores", "landmarks"],
                dynamic_axes={"image": {2: "height", 3: "width"}},
                opset_version=OPSET,
                dynamo=False,
            )
        _verify(model, partial)
        graph = onnx.load(str(partial))
        onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(config)})
        onnx.save(graph, str(partial))
        partial.replace(target)  # only a verified file ever appears under the final name
    return target


def _verify(model: torch.nn.Module, onnx_path: Path) -> None:
    """Run torch and onnxruntime on an input of another size than the export example; they must agree."""
    x = torch.randn(1, 3, 243, 371) * 50
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    for name, e, g in zip(("boxes", "scores", "landmarks"), expected, got, strict=True):
        if e.shape != g.shape or not np.allclose(e, g, atol=1e-3, rtol=1e-3):
            raise RuntimeError(f"ONNX export disagrees with torch on {name}: max diff {np.abs(e - g).max()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="mobilenet0.25_Final.pth")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="weights directory (default: $DEEPFAKE_WEIGHTS_DIR or weights/)",
    )
    parser.add_argument("--variant", default="auto", help=f"auto or one of: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    try:
        target = export(args.checkpoint, args.out or default_weights_dir(), args.variant)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"retinaface_export: {exc}", file=sys.stderr)
        return 1
    variant = json.loads(onnx.load(str(target)).metadata_props[0].value)["variant"]
    print(f"retinaface_export: wrote {target} (variant {variant})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
