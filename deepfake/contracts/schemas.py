"""The public result and error shapes (ARCHITECTURE.md, Contracts), shared by the CLI and both services.

They live in one module so the CLI's JSON, the preprocessor's response and the gateway's response
cannot drift apart: a field added here appears everywhere at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Verdict = Literal["fake", "real", "inconclusive"]


class VideoInfo(BaseModel):
    """What probing found out about the container before any frame was decoded."""

    container: str
    codec: str
    duration_s: float
    fps: float
    width: int = Field(description="Display width, after rotation metadata is applied.")
    height: int = Field(description="Display height, after rotation metadata is applied.")
    rotation: int = Field(0, description="Rotation metadata in degrees (0, 90, 180, 270).")
    has_audio: bool
    frame_count: int | None = Field(None, description="Frames in the stream, when the container says.")
    frames_sampled: int = 0
    size_bytes: int = 0
    sha256: str | None = Field(
        None, description="SHA-256 of the analysed file (hex): a report names exactly which file it judged."
    )


class TrackFrame(BaseModel):
    """One sampled frame of a face track."""

    frame_index: int
    t: float = Field(description="Timestamp in seconds.")
    box: list[float] = Field(description="Face box [x1, y1, x2, y2] in display pixels.")
    detection_score: float
    score: float | None = Field(None, description="Calibrated per-frame probability of manipulation.")


class TrackEvidence(BaseModel):
    """Pictures of one face track, for a person to check the score against.

    Each image field is a reference: a ``data:image/jpeg;base64,...`` URI as the pipeline makes it, the
    gateway's URL (``/v1/jobs/{id}/evidence/{name}``, same API key) or a file path (``deepfake detect
    --evidence DIR``). Made from frames the analysis decoded anyway: nothing is decoded twice.
    """

    frame_t: float = Field(description="Time (s) of the most suspicious sampled frame of this face.")
    frame_score: float | None = Field(description="Calibrated per-frame score at that frame.")
    thumbnail: str = Field(description="The face crop the model saw at that frame (JPEG).")
    heatmap: str | None = Field(
        None,
        description="The model's blend map over that crop (JPEG; red: where it thinks a face was blended "
        "in); null when the model exports no blend map.",
    )
    strip: str = Field(description="Sampled frames of the track side by side, its box drawn (JPEG).")
    strip_times: list[float] = Field(default_factory=list, description="Time (s) of each strip frame.")


class AudioVisualScore(BaseModel):
    """Whether this face's lips follow the audio (the audio-visual sync model, README "Audio-visual
    signal"). A face without a score (no audio, no speech, the signal off) is no evidence either way."""

    score: float | None = Field(
        description="Calibrated probability that lips and voice are out of sync (evidence of manipulation); "
        "null when not scored (see `reason`)."
    )
    offset_s: float | None = Field(
        None, description="Audio offset (s) at which lips and voice match best; null when not scored."
    )
    windows_scored: int = Field(0, description="Sampled windows of this face with speech that were scored.")
    reason: str = Field(
        description="Why there is a score or not: `scored`; `no_audio` (the file or live stream has no "
        "audio); `no_speech` (no sampled window of this face has speech); `too_few_windows` (fewer windows "
        "with speech than the sync model needs; live: or none whose audio has arrived yet); "
        "`audio_error` (the audio cannot be decoded); `uncalibrated` (the sync model has no score rule); "
        "`disabled` (the audio signal is off)."
    )


class Signals(BaseModel):
    """The two signals, each a calibrated probability of manipulation (the verdict fuses them only where the
    service fuses, DEEPFAKE_FUSE_AUDIO_VISUAL; by default it is the visual one)."""

    visual: float | None = Field(description="The visual model alone (the score before fusion).")
    audio_visual: float | None = Field(
        description="The audio-visual sync score (P(lips out of sync with the voice)); null where there is "
        "none."
    )


class Track(BaseModel):
    """One person followed across the sampled frames."""

    id: int
    verdict: Verdict
    score: float | None = Field(
        description="Calibrated probability that this face is manipulated: the visual score, or, where the "
        "service fuses (DEEPFAKE_FUSE_AUDIO_VISUAL, off by default), both signals fused where the face has "
        "an audio-visual score."
    )
    threshold: float | None = Field(
        None,
        description="The score at or above which this face is called fake: the visual model's, or the fused "
        "threshold where its score is fused (null only in results made before it existed).",
    )
    clip_scores: list[float] = Field(default_factory=list, description="Calibrated visual score per clip.")
    start_s: float
    end_s: float
    mean_face_px: float = Field(description="Mean face box side in pixels.")
    used_for_verdict: bool = Field(description="Large and long enough to count towards the video verdict.")
    frames: list[TrackFrame]
    audio_visual: AudioVisualScore | None = Field(
        None,
        description="Lips against the voice for this face (null only in results made before it existed).",
    )
    signals: Signals | None = Field(
        None, description="This face's visual and audio-visual scores before fusion."
    )
    evidence: TrackEvidence | None = Field(
        None, description="Thumbnail, heatmap and frame strip (jobs and `--evidence`; null otherwise)."
    )


class TimelinePoint(BaseModel):
    """The most suspicious face score at one sampled moment (None where no face was seen)."""

    t: float
    score: float | None


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    backend: str = Field(description="onnxruntime (in-process) or triton.")
    reals_called_fake: float | None = Field(
        None,
        description="Share of real videos the model called fake at its threshold, measured out of fold "
        "on sources it did not train on (MODEL_CARD.md); null when the model's metadata has no such figure.",
    )
    fakes_caught: float | None = Field(None, description="Share of fake videos caught, measured alike.")


class DetectionResult(BaseModel):
    """The answer for one video."""

    path: str | None = Field(None, description="Input path (CLI) or uploaded filename (API).")
    verdict: Verdict
    score: float | None = Field(
        description="Calibrated probability of manipulation (the score of the deciding face); None if "
        "inconclusive."
    )
    threshold: float = Field(
        description="Scores at or above this are called fake: the threshold of the face that decided (the "
        "visual model's, or the fused threshold where that face's score is fused)."
    )
    signals: Signals | None = Field(
        None,
        description="The video's score per signal before fusion: `visual` the highest visual score among the "
        "deciding faces, `audio_visual` the highest audio-visual score among them (null: none has one).",
    )
    tracks: list[Track]
    timeline: list[TimelinePoint]
    video: VideoInfo
    model: ModelInfo
    sync_model: ModelInfo | None = Field(
        None, description="The audio-visual sync model that scored the lips against the voice; null when off."
    )
    timings_ms: dict[str, float]
    warnings: list[str] = Field(default_factory=list)
    analyzed_at: datetime | None = Field(None, description="When the analysis finished (UTC, ISO 8601).")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_a_video, too_large.")
    message: str = Field(description="What went wrong and what to do about it.")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The one error shape for every 4xx/5xx response."""

    error: ErrorDetail


class FileError(BaseModel):
    """CLI JSON Lines record for an input that could not be analysed."""

    path: str
    error: ErrorDetail


# ---- Live streams (deepfake watch, /v1/streams) ----


class StreamTrack(BaseModel):
    """One face in a live stream, as of the latest result."""

    id: int
    score: float = Field(description="Calibrated probability of the latest clip window of this face.")
    smoothed: float = Field(
        description="Calibrated probability of the exponential moving average of the clip logits."
    )
    verdict: Verdict = Field(description="Running verdict: the smoothed score at the model's threshold.")
    box: list[float] = Field(description="Latest face box [x1, y1, x2, y2] in frame pixels.")
    windows: int = Field(description="Clip windows of this face scored so far.")
    window: list[float] = Field(description="[start, end] stream time of the latest scored window (s).")
    audio_visual: AudioVisualScore | None = Field(
        None,
        description="Lips against the voice over this face's last few windows, scored about once a second "
        "once their audio (+-1 s) has arrived; `no_audio` for a stream without audio (JPEG/PNG frames); "
        "null when the audio-visual signal is off (no sync model). Reported, not fused into `score`.",
    )


class StreamResult(BaseModel):
    """One rolling result of a live stream, emitted every few analysed frames."""

    type: Literal["result"] = "result"
    t: float = Field(description="Stream time (s) of the newest frame in the scored windows.")
    latency_ms: float = Field(description="From the arrival of that newest frame to this result.")
    frames_received: int
    frames_dropped: int = Field(description="Frames dropped so far because analysis was behind.")
    tracks: list[StreamTrack] = Field(description="Faces seen recently that have a score.")


class StreamFinalTrack(BaseModel):
    """A face over the whole stream: its score is the mean over all its scored windows (as detect)."""

    id: int
    score: float
    verdict: Verdict
    windows: int
    start_s: float
    end_s: float
    mean_face_px: float
    used_for_verdict: bool
    audio_visual: AudioVisualScore | None = Field(
        None,
        description="Lips against the voice over the whole stream: `score` is the mean of this face's "
        "rolling audio-visual scores, `offset_s` the latest, `windows_scored` the windows with speech they "
        "covered; without any score, the latest reason. Null when the signal is off (no sync model).",
    )


class StreamSummary(BaseModel):
    """The last message of a live stream."""

    type: Literal["final"] = "final"
    t: float = Field(description="Stream time (s) of the last frame received.")
    verdict: Verdict
    score: float | None = Field(description="Highest final score among the tracks that decide.")
    threshold: float
    tracks: list[StreamFinalTrack]
    frames_received: int
    frames_analysed: int
    frames_dropped: int
    windows: int = Field(description="Clip windows scored, all tracks together.")
    model: ModelInfo
    timings_ms: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class StreamControl(BaseModel):
    """A text message a client sends on /v1/streams: ``{"t": 1.28}`` is the stream time of the next binary
    frame (without it a frame's time is its arrival since the first frame); ``{"type": "end"}`` asks for
    the final summary, after which the server closes normally (1000)."""

    model_config = {"extra": "forbid"}

    type: Literal["time", "end"] = "time"
    t: float | None = Field(None, ge=0, description="Stream time (s) of the next frame.")


class StreamError(BaseModel):
    """Sent on /v1/streams right before the server closes the socket for a refusal or a failure."""

    type: Literal["error"] = "error"
    error: ErrorDetail


def stream_close_code(http_status: int) -> int:
    """The WebSocket close code of a refusal on /v1/streams: 4000 + the HTTP status the same refusal gets
    on the REST API (4401 no/invalid key, 4413 frame too large, 4415 not an image, 4429 too many streams,
    4408 idle, 4503 unavailable); 1011 for an internal error."""
    return 4000 + http_status if 400 <= http_status < 600 and http_status != 500 else 1011


# ---- Asynchronous jobs (gateway /v1/jobs) ----

JobState = Literal["queued", "running", "succeeded", "failed"]


class JobStatus(BaseModel):
    """Where one asynchronous analysis stands: `error` when it failed, `result_url` when it succeeded."""

    id: str
    state: JobState
    progress: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of the analysis done (0..1).")
    filename: str | None = Field(None, description="The uploaded file's name, for display only.")
    created_at: datetime = Field(description="When the job was accepted (UTC, ISO 8601).")
    updated_at: datetime = Field(description="When the job last changed (UTC, ISO 8601).")
    attempts: int = Field(0, description="Times a worker started this job (restarts re-queue running jobs).")
    callback_url: str | None = None
    error: ErrorDetail | None = None
    result_url: str | None = Field(None, description="Absolute URL of the result, once the job succeeded.")
    next_attempt_at: datetime | None = Field(
        None,
        description="When (UTC, ISO 8601) a queued job waiting out an unavailable analysis service (see "
        "`retry_reason`) is tried next; null otherwise.",
    )
    retry_reason: ErrorDetail | None = Field(
        None,
        description="The transient failure (e.g. preprocessor_unavailable, inference_unavailable) this job "
        "was re-queued for; kept while it is retried, cleared when it finishes.",
    )


class JobCreated(BaseModel):
    """The 202 answer to POST /v1/jobs; poll `status_url` (also in the Location header)."""

    id: str
    state: JobState
    status_url: str = Field(description="Absolute URL of the job's status.")
    result_url: str = Field(description="Absolute URL of the result (409 until the job succeeded).")
