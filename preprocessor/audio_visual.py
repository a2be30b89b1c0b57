"""The audio-visual score of a face track: how well its mouth motion follows the sound, and the fusion of
that score with the visual one. One copy of the rule, used by serving (CLI, preprocessor service) and by
the sync model's evaluation (training/sync_eval.py), so the figures measured are the product's.

Per sampling window of a track (``clip_len`` frames every 2nd frame: about 0.5-0.7 s) the sync model
(training/sync_model.py) scores the window's mouth crops against the log-mel of the audio played with them
shifted by each of OFFSETS_S: one logit per candidate offset, the window's offset curve. Windows without
speech (preprocessor/audio.py speech_fraction) are never scored, so silence (at the start, the end or
anywhere) decides nothing. The curves of the track's speech windows, each less its own median, are
averaged; from the mean curve (SyncNet / AVAD style):

- ``plausible_conf``: its peak over offsets within +-plausible_offset_s (a real recording is in sync to
  within a few frames), above its median: a high value means the lips follow the voice;
- ``implausible_margin``: its peak beyond +-plausible_offset_s less the plausible peak: positive when
  the track is in sync only at an offset no real recording has (audio pasted on shifted, a re-dub).

P(out of sync) = sigmoid(intercept + coef . features), fitted out of fold on real videos as they are
(in sync) and with their audio shifted by 0.5 s (out of sync); the coefficients are the model's metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepfake.contracts.metadata import SyncMeta
from preprocessor.audio import (
    AudioTrack,
    log_mel,
    mel_windows,
    speech_fraction_of,
    speech_frames,
)
from preprocessor.mouth import mouth_crops

OFFSETS_S: tuple[float, ...] = tuple(round(-1.0 + 0.04 * i, 2) for i in range(51))  # -1.0 .. +1.0 s
FEATURES = ("plausible_conf", "implausible_margin")
MIN_WINDOW_FRAMES = 4  # a window with fewer mouth frames (a track's ragged end) is not scored


@dataclass
class AudioVisualResult:
    score: float | None  # P(out of sync) for the track; None when not scored
    offset_s: float | None  # the best audio offset found (s; + means audio late)
    windows_scored: int
    # "scored" | "no_audio" | "no_speech" | "too_few_windows" | "audio_error" | "uncalibrated" (a model
    # without fitted score coefficients: features but no score)
    reason: str
    features: dict[str, float] | None = None  # track_features of the scored windows (evaluation, fusion)


class SyncModel(Protocol):
    """What an inference backend of the sync model implements (in-process ONNX, Triton)."""

    meta: SyncMeta

    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """[N, T, 48, 96] uint8 mouth crops, [N, K, 80, 64] float32 log-mel -> [N, K] float32 logits."""
        ...

    def close(self) -> None: ...


def window_span(times: np.ndarray) -> tuple[float, float]:
    """The stretch of time a window of frames shows: from its first frame to the end of its last (the last
    frame is on screen for one frame step, the median gap between its frames)."""
    times = np.asarray(times, np.float64)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return float(times[0]), float(times[-1] + step)


def pad_mouths(mouths: np.ndarray, clip_len: int) -> np.ndarray:
    """[clip_len, H, W]: the first clip_len mouth crops, padded by repeating the last."""
    mouths = mouths[:clip_len]
    if len(mouths) < clip_len:
        mouths = np.concatenate([mouths, np.repeat(mouths[-1:], clip_len - len(mouths), axis=0)])
    return mouths


def offset_curves(
    model: SyncModel,
    mouths: list[np.ndarray],
    spans: list[tuple[float, float]],
    mel: np.ndarray,
    mel_t0: float,
) -> np.ndarray:
    """[N, len(offsets)] sync logits of each window's mouth crops [T, H, W] against its audio at every
    offset of the model's metadata (OFFSETS_S when it names none)."""
    offsets = np.array(model.meta.offsets_s or OFFSETS_S)
    clip_len = model.meta.clip_len
    batch_mouth = np.stack([pad_mouths(m, clip_len) for m in mouths])
    batch_mel = np.stack([mel_windows(mel, mel_t0, a, b, offsets) for a, b in spans])
    return np.asarray(model.sync_logits(batch_mouth, batch_mel), np.float32)


def track_features(
    curves: np.ndarray, offsets: np.ndarray, plausible_s: float
) -> tuple[dict[str, float], float]:
    """The track's features (module docstring) from its windows' curves [N, K], and the best offset."""
    mean = (curves - np.median(curves, axis=1, keepdims=True)).mean(axis=0)
    near = np.abs(offsets) <= plausible_s + 1e-9
    plausible = float(mean[near].max())
    far = float(mean[~near].max()) if (~near).any() else -math.inf
    features = {"plausible_conf": plausible - float(np.median(mean)), "implausible_margin": far - plausible}
    return features, float(offsets[int(np.argmax(mean))])


def out_of_sync_p(features: dict[str, float], coef: dict[str, float]) -> float:
    """P(out of sync) from a track's features and the fitted coefficients (SyncMeta.score_coef)."""
    z = coef.get("intercept", 0.0) + sum(coef.get(name, 0.0) * features[name] for name in FEATURES)
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def score_track(
    audio: AudioTrack | None,
    mel: tuple[np.ndarray, float] | None,
    windows: list[tuple[np.ndarray, np.ndarray]],
    model: SyncModel,
    speech: tuple[np.ndarray, float] | None = None,
) -> AudioVisualResult:
    """The audio-visual result of one face track. ``windows``: per sampling window, (face crops [T, S, S, 3]
    uint8 RGB, their frame times [T] in s); ``mel``: log_mel(audio) and ``speech``: speech_frames(audio),
    passed in so a video's tracks share them (each computed here when None: on a long file the
    voice-activity pass alone costs seconds)."""
    mouths = [(mouth_crops(crops), times) for crops, times in windows]
    return score_mouths(audio, mel, mouths, model, speech)


def score_mouths(
    audio: AudioTrack | None,
    mel: tuple[np.ndarray, float] | None,
    windows: list[tuple[np.ndarray, np.ndarray]],
    model: SyncModel,
    speech: tuple[np.ndarray, float] | None = None,
) -> AudioVisualResult:
    """:func:`score_track` from mouth crops [T, 48, 96] uint8 instead of face crops (the evaluation keeps
    only mouth crops)."""
    if audio is None or len(audio.samples) == 0:
        return AudioVisualResult(None, None, 0, "no_audio")
    meta = model.meta
    if mel is None:
        mel = log_mel(audio)
    is_speech, speech_t0 = speech if speech is not None else speech_frames(audio)
    mouths, spans = [], []
    for crops, times in windows:
        if len(crops) < MIN_WINDOW_FRAMES or len(crops) != len(times):
            continue
        a, b = window_span(times)
        if speech_fraction_of(is_speech, speech_t0, a, b) < meta.min_speech_fraction:
            continue
        mouths.append(crops)
        spans.append((a, b))
    if not mouths:
        return AudioVisualResult(None, None, 0, "no_speech")
    if len(mouths) < meta.min_windows:
        return AudioVisualResult(None, None, len(mouths), "too_few_windows")
    curves = offset_curves(model, mouths, spans, mel[0], mel[1])
    offsets = np.array(meta.offsets_s or OFFSETS_S)
    features, best = track_features(curves, offsets, meta.plausible_offset_s)
    score = out_of_sync_p(features, meta.score_coef) if meta.score_coef else None
    reason = "scored" if score is not None else "uncalibrated"
    return AudioVisualResult(score, best, len(mouths), reason, features)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fuse(visual_p: float, av: AudioVisualResult, combiner: dict) -> float:
    """The fused P(fake): sigmoid(intercept + visual * logit(visual_p) + audio_visual * logit(av.score)),
    the combiner fitted on out-of-fold scores (SyncMeta.combiner); visual_p unchanged when the track has
    no audio-visual score (or the model no combiner)."""
    if av.score is None or not combiner:
        return visual_p
    z = (
        combiner.get("intercept", 0.0)
        + combiner.get("visual", 1.0) * _logit(visual_p)
        + combiner.get("audio_visual", 0.0) * _logit(av.score)
    )
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
