"""``deepfake faces VIDEO --out DIR``: write the face crops the model would see, plus a manifest.

For inspection (what did the detector and tracker pick?) and for training-data extraction: crops follow
the model's crop policy (from ``--model`` or the default model when present), so training crops match
serving crops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cli.commands.common import (
    SetupError,
    UsageError,
    add_pipeline_arguments,
    load_backend,
    load_detector,
    report_error,
    set_threads,
    settings_from_args,
)

HELP = "Write a video's face crops (PNG/JPEG) and manifest.tsv/manifest.json to a folder."
TSV_COLUMNS = (
    "file",
    "track",
    "used_for_verdict",
    "frame_index",
    "t",
    "x1",
    "y1",
    "x2",
    "y2",
    "detection_score",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="crop image format")
    parser.add_argument("--crop-size", type=int, help="override the crop side in pixels")
    parser.add_argument("--crop-scale", type=float, help="override the box scale of the crop policy")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from deepfake.contracts.metadata import CropPolicy

    try:
        settings = settings_from_args(args)
        set_threads(settings.threads)
        backend = None
        if args.model is not None or settings.model_path.is_file():
            backend = load_backend(settings)
        else:
            print(
                f"deepfake: note: no model at {settings.model_path}; using the default crop policy "
                "(pass --model to crop as a given model does)",
                file=sys.stderr,
            )
        crop = backend.meta.crop if backend is not None else CropPolicy()
        updates = {"size": args.crop_size, "scale": args.crop_scale}
        crop = crop.model_copy(update={k: v for k, v in updates.items() if v is not None})
        if crop.size < 8 or crop.scale <= 0:
            raise UsageError("--crop-size must be >= 8 and --crop-scale > 0")
        detector = load_detector(settings)
        prepare_out(args.out)
    except (UsageError, SetupError) as exc:
        return report_error(exc)

    from preprocessor.errors import VideoError
    from preprocessor.pipeline import Pipeline

    pipeline = Pipeline(settings, backend, detector, crop=crop)
    try:
        extraction = pipeline.extract_faces(args.video)
    except VideoError as exc:
        print(json.dumps({"path": str(args.video), "error": exc.to_error_detail().model_dump()}))
        print(f"deepfake: {args.video}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    try:
        n = write_crops(extraction, args.video, args.out, args.format)
    except OSError as exc:
        return report_error(SetupError(f"--out {args.out}: cannot write the crops: {exc}"))
    for warning in extraction.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {n} crops of {len(extraction.tracks)} face track(s) to {args.out}")
    return 0


def prepare_out(out: Path) -> None:
    """Create the output folder before any work, so a bad ``--out`` is a one-line error, not a traceback
    after the video was analysed."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; pass a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder is not writable")


def write_crops(extraction, video: Path, out: Path, image_format: str) -> int:
    """Crops as ``track{id}_f{frame}.{fmt}``, one TSV row per crop, and a JSON manifest; returns the count."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(TSV_COLUMNS)]
    tracks_json = []
    count = 0
    for track in extraction.tracks:
        files = []
        for det in track.detections:
            name = f"track{track.id:02d}_f{det.frame_index:06d}.{image_format}"
            if not cv2.imwrite(str(out / name), cv2.cvtColor(det.crop, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {out / name}")
            box = [round(float(v), 1) for v in det.box[:4]]
            rows.append(
                "\t".join(
                    map(
                        str,
                        [
                            name,
                            track.id,
                            int(track.used_for_verdict),
                            det.frame_index,
                            det.t,
                            *box,
                            round(det.score, 4),
                        ],
                    )
                )
            )
            files.append(
                {
                    "file": name,
                    "frame_index": det.frame_index,
                    "t": det.t,
                    "box": box,
                    "detection_score": round(det.score, 4),
                }
            )
            count += 1
        tracks_json.append(
            {
                "id": track.id,
                "used_for_verdict": track.used_for_verdict,
                "mean_face_px": round(track.mean_face_px, 1),
                "crops": files,
            }
        )
    (out / "manifest.tsv").write_text("\n".join(rows) + "\n")
    manifest = {
        "video": str(video),
        "info": extraction.video.model_dump(),
        "crop_policy": extraction.crop.model_dump(),
        "tracks": tracks_json,
        "warnings": extraction.warnings,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return count
