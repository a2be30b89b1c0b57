"""Pipeline settings, one place, environment variables with the ``DEEPFAKE_`` prefix.

The CLI, the preprocessor service and the evaluation scripts all build a PipelineSettings (the service's
ServiceSettings is a subclass), so a setting means the same thing everywhere (e.g. ``DEEPFAKE_FRAMES=64``
changes the service and the CLI alike). Built on deepfake.settings (one base for every deployable); the
detector's variables come from DetectorSettings and the duration limit from MaxDurationSettings, each
declared once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from deepfake.settings import REPO_ROOT, DataSettings, MaxDurationSettings
from preprocessor.detectors.settings import DetectorSettings

DEFAULT_MODEL_PATH = REPO_ROOT / "model_repository" / "deepfake_detector" / "1" / "model.onnx"
DEFAULT_SYNC_MODEL_PATH = REPO_ROOT / "model_repository" / "av_sync" / "1" / "model.onnx"
# Frame-size limits (also probe()'s defaults): 8K UHD's pixel count (7680x4320, 33.2 MP; a decoded 8K frame
# is ~50 MB in YUV and ~100 MB in RGB), and the shortest side a frame may have, both as stored and in the
# detector's downscaled copy (a face must fit, and the detector refuses frames under 8 px).
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
DEFAULT_MIN_FRAME_SIDE = 32
DEFAULT_DETECT_MAX_SIDE = 640


class PipelineSettings(DataSettings, DetectorSettings, MaxDurationSettings):
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="ONNX model for the in-process backend.")
    # The audio-visual signal (README "Audio-visual signal"): lips against the voice, fused into the score.
    audio_visual: bool | None = Field(
        None,
        description="Score whether the lips follow the audio (reported per track and in signals); None "
        "(default): on when the sync model is there (the file at sync_model_path; on Triton: model "
        "sync_model_name).",
    )
    # Off by default: out of fold the fused score beat the visual one by +0.045 AUC on the videos with audio
    # with one training seed of av_sync 1.0.0 and lost 0.045 with another (its MODEL_CARD), so fusing would
    # move verdicts on evidence that does not hold. The signal is still computed and shown.
    fuse_audio_visual: bool = Field(
        False,
        description="Fuse the audio-visual score into each track's score and verdict (the sync model's "
        "combiner and threshold); false (default): score and verdict are the visual ones.",
    )
    sync_model_path: Path = Field(
        DEFAULT_SYNC_MODEL_PATH, description="ONNX audio-visual sync model for the in-process backend."
    )

    # Sampling: ~`frames` frames in clips of the model's clip_len, taken every `frame_stride`-th frame.
    frames: int = Field(32, ge=1, le=1024, description="Frames to sample per video (rounded to whole clips).")
    frame_stride: int = Field(2, ge=1, le=30, description="Take every n-th frame inside a clip window.")
    detect_every: int = Field(
        4, ge=1, description="Detect on every n-th frame of a window (and its last); interpolate between."
    )
    detect_max_side: int = Field(
        DEFAULT_DETECT_MAX_SIDE, ge=64, description="Detect faces on a copy downscaled to this side."
    )

    # Input limits (refused with too_large / too_long / too_large_frame / frame_too_small).
    max_bytes: int = Field(2 * 1024**3, ge=1, description="Largest accepted file in bytes.")
    max_frame_pixels: int = Field(
        DEFAULT_MAX_FRAME_PIXELS,
        ge=1,
        description="Largest frame (width x height) accepted, checked from the header before decoding.",
    )
    min_frame_side: int = Field(
        DEFAULT_MIN_FRAME_SIDE,
        ge=8,
        description="Frames whose shorter side (as stored, or once downscaled for detection) is smaller "
        "are refused.",
    )

    # Tracking and what counts towards the verdict.
    min_face_px: float = Field(32.0, ge=0, description="Detections smaller than this (box side) are ignored.")
    min_track_frames: int = Field(3, ge=1, description="Tracks seen in fewer sampled frames are dropped.")
    verdict_min_face_px: float = Field(64.0, ge=0, description="Tracks smaller than this do not decide.")
    verdict_min_coverage: float = Field(
        0.25, ge=0, le=1, description="Tracks seen in less than this share of sampled frames do not decide."
    )
    max_tracks: int = Field(8, ge=1, description="Most tracks sent to the model (largest first).")

    batch_size: int = Field(16, ge=1, description="Clips per inference request.")
    threads: int = Field(2, ge=1, description="Threads for decoding and ONNX Runtime.")

    # Live streams (preprocessor/stream.py): every frame_stride-th frame received is analysed, faces are
    # detected every detect_every-th of those, and each track's last clip_len crops are scored every
    # stream_hop analysed frames.
    stream_hop: int = Field(
        4,
        ge=1,
        le=64,
        description="Score a live stream every n analysed frames (windows of clip_len overlap when n is "
        "smaller); smaller: lower latency, more model calls.",
    )
    stream_queue_frames: int = Field(
        8,
        ge=1,
        le=256,
        description="Analysed frames a live stream may have waiting; frames arriving beyond it are "
        "dropped (counted) rather than let the results fall behind.",
    )
    stream_ema_alpha: float = Field(
        0.3, gt=0, le=1, description="Weight of the newest clip in a track's smoothed logit (EMA)."
    )
    stream_track_ttl_s: float = Field(
        2.0, gt=0, description="A live track not seen for this many stream seconds has ended."
    )
