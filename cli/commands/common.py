"""What the ``detect`` and ``faces`` subcommands share: settings from flags, model and detector loading."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from preprocessor.settings import PipelineSettings

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp", ".gif"}
)


class UsageError(Exception):
    """A flag or setting the user must fix; the CLI exits with status 2."""


class SetupError(Exception):
    """Something the command needs (model file, detector weights) is missing; exit status 1."""


def add_pipeline_arguments(parser: argparse.ArgumentParser, frames: bool = True) -> None:
    """The flags every analysing command takes; ``frames=False`` for a stream (it analyses every frame)."""
    if frames:
        parser.add_argument(
            "--frames",
            type=int,
            help=f"frames to sample per video (default {_default('frames')}, env DEEPFAKE_FRAMES)",
        )
    parser.add_argument("--detector", help="face detector: blazeface (embedded default) or retinaface")
    parser.add_argument("--weights-dir", type=Path, help="face-detector weights directory (RetinaFace)")
    parser.add_argument(
        "--model", type=Path, help="ONNX model file (default: the trained model in model_repository/)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help=f"decoder and model threads (default {_default('threads')}, env DEEPFAKE_THREADS)",
    )


def _default(field: str) -> object:
    """A pipeline setting's declared default, so the help text cannot drift from the settings class."""
    return PipelineSettings.model_fields[field].default


def add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """The audio-visual signal's flags (the commands that hear the audio: detect, watch)."""
    parser.add_argument(
        "--no-audio",
        action="store_true",
        help="leave the audio out: no lip-sync score, the verdict is the visual model's (env "
        "DEEPFAKE_AUDIO_VISUAL=false)",
    )
    parser.add_argument(
        "--sync-model",
        type=Path,
        help="ONNX audio-visual sync model (default model_repository/av_sync/1/model.onnx, used if present)",
    )


def settings_from_args(args: argparse.Namespace, **extra: object) -> PipelineSettings:
    """PipelineSettings from env (DEEPFAKE_*) with the flags that were given (and ``extra``) on top."""
    overrides = {
        **extra,
        "frames": getattr(args, "frames", None),
        "detector": args.detector,
        "weights_dir": args.weights_dir,
        "model_path": args.model,
        "threads": args.threads,
        "sync_model_path": getattr(args, "sync_model", None),
        "audio_visual": False if getattr(args, "no_audio", False) else None,
    }
    try:
        return PipelineSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid setting: {problems}") from exc


def load_backend(settings: PipelineSettings):
    """The in-process ONNX Runtime backend for ``settings.model_path``."""
    from inference.onnx_backend import ModelLoadError, OnnxBackend

    try:
        return OnnxBackend(settings.model_path, threads=settings.threads)
    except ModelLoadError as exc:
        raise SetupError(str(exc)) from exc


def load_sync_model(settings: PipelineSettings):
    """The in-process audio-visual sync model, or None when the signal is off: turned off, or left to its
    default (``audio_visual`` None) and no model file at ``sync_model_path``. Asked for and missing or
    broken: SetupError."""
    from inference.onnx_backend import ModelLoadError
    from inference.sync_backend import OnnxSyncModel

    if settings.audio_visual is False or (
        settings.audio_visual is None and not settings.sync_model_path.is_file()
    ):
        return None
    try:
        return OnnxSyncModel(settings.sync_model_path, threads=settings.threads)
    except ModelLoadError as exc:
        raise SetupError(str(exc)) from exc


def load_detector(settings: PipelineSettings):
    from preprocessor.detectors.base import create_detector

    try:
        return create_detector(settings.detector, settings.weights_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except (FileNotFoundError, OSError) as exc:
        raise SetupError(f"face detector {settings.detector!r} cannot start: {exc}") from exc


def set_threads(threads: int) -> None:
    """OpenCV's own pool would otherwise take every core beside the decoder and the model."""
    import cv2

    cv2.setNumThreads(threads)


def report_error(exc: Exception) -> int:
    """Print a UsageError/SetupError for a human and return the exit status."""
    print(f"deepfake: error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, UsageError) else 1
