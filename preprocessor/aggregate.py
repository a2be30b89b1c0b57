"""From raw model logits to the public answer: calibrated scores per frame, clip, track and video.

The rules (documented in README "How results are computed"):
- calibrated probability p = sigmoid(logit / temperature), temperature from the model metadata;
- a track's visual score is the mean of its clips' scores (each clip is one window of consecutive frames,
  so every part of the video where the face appears counts equally); its score is that fused with its
  audio-visual score by the sync model's combiner (preprocessor.audio_visual.fuse), or the visual score
  alone where it has no audio-visual score (no audio, no speech, the signal off);
- a track's threshold is the visual model's, or the sync model's fused threshold (SyncMeta.threshold)
  where its score is fused; its verdict: ``fake`` if its score >= its threshold, else ``real``;
- the video's score is the most suspicious track among those that decide (``used_for_verdict``), by how
  far its score lies above its threshold (the highest score when all share one threshold): one
  manipulated face makes a manipulated video; the video's threshold is that track's;
- verdict: ``fake`` if the score >= the threshold, else ``real``; ``inconclusive`` (score None) when
  no usable face was found;
- signals: the video's visual and audio-visual scores before fusion, each the highest among the deciding
  tracks;
- timeline: for each sampled moment, the highest per-frame score among the faces seen then (None if
  no face was seen).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepfake.contracts.metadata import SyncMeta
from deepfake.contracts.schemas import AudioVisualScore, Signals, TimelinePoint, Track, TrackFrame, Verdict
from preprocessor.audio_visual import AudioVisualResult, fuse
from preprocessor.tracking import FaceTrack

# What a track says about lips and voice when the audio-visual signal is off (not configured or turned off).
AUDIO_VISUAL_OFF = AudioVisualResult(score=None, offset_s=None, windows_scored=0, reason="disabled")


def calibrate(logits: np.ndarray | float, temperature: float) -> np.ndarray:
    """sigmoid(logit / temperature), numerically safe for large logits."""
    z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-6)
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


@dataclass
class ClipScore:
    """One clip's outputs, already calibrated, mapped back to its track and detections."""

    track: int  # index into the kept tracks
    detections: list[int]  # indices into that track's detections, one per real (non-padded) frame
    score: float
    frame_scores: list[float]  # one per real frame
    # The model's blend map per real frame [n, h, w] in [0, 1], when it exports one (evidence heatmaps).
    blend_maps: np.ndarray | None = field(default=None, repr=False)
    logit: float = 0.0  # the raw clip logit (a live stream smooths logits, preprocessor/stream.py)


def verdict_for(score: float | None, threshold: float) -> Verdict:
    if score is None:
        return "inconclusive"
    return "fake" if score >= threshold else "real"


@dataclass
class Aggregate:
    """The public answer's parts ``aggregate`` computes."""

    verdict: Verdict
    score: float | None
    threshold: float
    tracks: list[Track]
    timeline: list[TimelinePoint]
    signals: Signals
    warnings: list[str]


def aggregate(
    tracks: list[FaceTrack],
    clips: list[ClipScore],
    sample_times: list[float],
    threshold: float,
    audio_visual: list[AudioVisualResult] | None = None,
    sync: SyncMeta | None = None,
) -> Aggregate:
    """The answer from the kept tracks and their clip scores; ``audio_visual``: one result per kept track
    (None: the signal is off), fused by ``sync``'s combiner and judged at its threshold."""
    warnings: list[str] = []
    frame_scores: dict[tuple[int, int], float] = {}
    clip_scores: dict[int, list[float]] = {i: [] for i in range(len(tracks))}
    for clip in clips:
        clip_scores[clip.track].append(clip.score)
        for det_index, frame_score in zip(clip.detections, clip.frame_scores, strict=True):
            frame_scores[(clip.track, det_index)] = frame_score
    public: list[Track] = []
    timeline_scores: dict[int, float] = {}
    for ti, track in enumerate(tracks):
        scores = clip_scores[ti]
        visual = float(np.mean(scores)) if scores else None
        av = audio_visual[ti] if audio_visual is not None else AUDIO_VISUAL_OFF
        # Fused where the track has an audio-visual score and the sync model a combiner (fuse's own rule).
        combiner = sync.combiner if sync is not None else {}
        fused = visual is not None and av.score is not None and bool(combiner)
        score = fuse(visual, av, combiner) if fused and visual is not None else visual
        track_threshold = sync.threshold if fused and sync is not None else threshold
        frames = []
        for di, det in enumerate(track.detections):
            fs = frame_scores.get((ti, di))
            frames.append(
                TrackFrame(
                    frame_index=det.frame_index,
                    t=det.t,
                    box=[round(float(v), 1) for v in det.box[:4]],
                    detection_score=round(float(det.score), 4),
                    score=None if fs is None else round(fs, 4),
                )
            )
            if fs is not None:
                timeline_scores[det.sample] = max(fs, timeline_scores.get(det.sample, 0.0))
        public.append(
            Track(
                id=track.id,
                verdict=verdict_for(score, track_threshold),
                threshold=track_threshold,
                score=None if score is None else round(score, 4),
                clip_scores=[round(s, 4) for s in scores],
                start_s=track.start_s,
                end_s=track.end_s,
                mean_face_px=round(track.mean_face_px, 1),
                used_for_verdict=track.used_for_verdict,
                frames=frames,
                audio_visual=AudioVisualScore(
                    score=None if av.score is None else round(av.score, 4),
                    offset_s=None if av.offset_s is None else round(av.offset_s, 3),
                    windows_scored=av.windows_scored,
                    reason=av.reason,
                ),
                signals=Signals(
                    visual=None if visual is None else round(visual, 4),
                    audio_visual=None if av.score is None else round(av.score, 4),
                ),
            )
        )
    deciding = [t for t in public if t.used_for_verdict and t.score is not None]
    top = max(deciding, key=lambda t: (t.score or 0.0) - (t.threshold or threshold), default=None)
    video_score = None if top is None else top.score
    video_threshold = threshold if top is None or top.threshold is None else top.threshold
    if video_score is None:
        warnings.append(
            "no usable face found: the video cannot be judged (check that faces are visible, frontal "
            "enough and larger than the minimum size, or sample more frames with --frames)"
        )
    timeline = [
        TimelinePoint(t=t, score=None if i not in timeline_scores else round(timeline_scores[i], 4))
        for i, t in enumerate(sample_times)
    ]
    return Aggregate(
        verdict=verdict_for(video_score, video_threshold),
        score=video_score,
        threshold=video_threshold,
        tracks=public,
        timeline=timeline,
        signals=video_signals(public),
        warnings=warnings,
    )


def video_signals(tracks: list[Track]) -> Signals:
    """The video's score per signal, as its score is taken: the highest among the deciding tracks."""

    def highest(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    deciding = [t.signals for t in tracks if t.used_for_verdict and t.signals is not None]
    return Signals(
        visual=highest([s.visual for s in deciding]), audio_visual=highest([s.audio_visual for s in deciding])
    )
