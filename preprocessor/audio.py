"""Audio in the pipeline: the first audio stream decoded to mono 16 kHz, on the video's timeline, as log-mel
features, cut into windows that match the sampled video windows, and a voice-activity test.

Why the video's timeline: a sampled frame's time is its presentation time relative to the video stream's
start (preprocessor/sampling.py); ``AudioTrack.start_s`` is the first decoded audio frame's presentation
time relative to that same origin, so a window of frames at [t0, t1] hears exactly the samples played
with it, whatever the container's start offsets (AAC priming, an audio stream starting late or early).

Why the voice-activity test: a sync model can only judge lips against speech. A window without speech
(silence, music, noise) gets no audio-visual score and never counts as evidence either way, so the
silence at the start or end of a clip (which fooled published audio-visual detectors) decides nothing.

A broken audio stream raises :class:`preprocessor.errors.AudioError` (the caller reports ``audio_error``
and keeps the visual verdict); a stream that breaks part way keeps the audio decoded before the break and
says so in ``AudioTrack.warnings``. A file without an audio stream gives ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from preprocessor.errors import AudioError

SAMPLE_RATE = 16000
N_MELS = 80
HOP_S = 0.01  # 100 mel frames per second
WIN_S = 0.025
MEL_FRAMES = 64
N_FFT = 512
F_MIN, F_MAX = 0.0, 8000.0
HOP = round(HOP_S * SAMPLE_RATE)  # 160 samples
WIN = round(WIN_S * SAMPLE_RATE)  # 400 samples
# Mel energies are floored before the log: digital silence has log-mel LOG_SILENCE in every band, and the
# parts of a window outside the audio are filled with it.
LOG_FLOOR = 1e-10
LOG_SILENCE = math.log(LOG_FLOOR)  # -23.03

# Voice activity (speech_fraction): a 25 ms frame every 10 ms is speech when its energy is at least
# SPEECH_MIN_DBFS, at least SPEECH_OVER_FLOOR_DB over the track's own noise floor (its 10th percentile
# frame energy), and at least SPEECH_BAND_SHARE of its energy lies in the voice band (80-4000 Hz: a male
# voice's fundamental is under 300 Hz), energies measured in that band (rumble, DC, hiss do not count).
SPEECH_MIN_DBFS = -50.0
SPEECH_OVER_FLOOR_DB = 10.0
SPEECH_BAND = (80.0, 4000.0)
SPEECH_BAND_SHARE = 0.5
# A window with less than this share of speech frames is "no speech" and never scored.
MIN_SPEECH_FRACTION = 0.3


@dataclass
class AudioTrack:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    start_s: float  # time of samples[0] on the video's timeline (s)
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def _stream_start(stream: av.stream.Stream) -> float | None:
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


def decode_audio(path: Path, max_duration_s: float | None = None) -> AudioTrack | None:
    """The first audio stream of ``path`` as mono float32 at SAMPLE_RATE, at most ``max_duration_s``
    seconds of it; None when the file has no audio stream. Raises AudioError when the stream cannot be
    decoded at all (no audio before the first error)."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(f"cannot open the file for its audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        video_start = _stream_start(container.streams.video[0]) if container.streams.video else None
        # Resampled in the stream's own layout and averaged here: FFmpeg's stereo-to-mono downmix adds
        # the channels at -3 dB each (a centred voice comes out 3 dB louder than either channel).
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        parts: list[np.ndarray] = []
        first_time: float | None = None
        have = 0
        limit = None if max_duration_s is None else int(max_duration_s * SAMPLE_RATE)
        warnings: list[str] = []
        try:
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = frame.time if frame.time is not None else _stream_start(stream) or 0.0
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().mean(axis=0))
                    have += len(parts[-1])
                if limit is not None and have >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    parts.append(out.to_ndarray().mean(axis=0))
        except (av.error.FFmpegError, ValueError) as exc:
            if not parts:
                raise AudioError(f"the audio stream cannot be decoded: {exc}") from exc
            warnings.append(
                f"the audio stream broke after {have / SAMPLE_RATE:.2f} s ({exc}); the rest is unused"
            )
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if limit is not None:
        samples = samples[:limit]
    start = (first_time or 0.0) - (video_start or 0.0)
    return AudioTrack(samples=samples, start_s=float(start), warnings=warnings)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """[N_MELS, N_FFT // 2 + 1] triangular filters, HTK mel scale, F_MIN..F_MAX, each of unit area
    (Slaney normalisation), so a band's energy does not depend on its width."""
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs[None] - lower) / (centre - lower)
    fall = (upper - freqs[None]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rise, fall))
    fb *= 2.0 / (upper - lower)
    return fb.astype(np.float32)


def _frames(samples: np.ndarray) -> np.ndarray:
    """[F, WIN] frames every HOP samples; frame i is centred on sample i * HOP + WIN / 2."""
    if len(samples) < WIN:
        samples = np.pad(samples, (0, WIN - len(samples)))
    n = 1 + (len(samples) - WIN) // HOP
    return np.lib.stride_tricks.as_strided(
        samples, shape=(n, WIN), strides=(samples.strides[0] * HOP, samples.strides[0])
    )


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return np.hanning(WIN).astype(np.float32)


def _power(frames: np.ndarray) -> np.ndarray:
    return (np.abs(np.fft.rfft(frames * _hann(), n=N_FFT, axis=1)) ** 2 / WIN).astype(np.float32)


def log_mel(track: AudioTrack) -> tuple[np.ndarray, float]:
    """[N_MELS, F] float32 log-mel (25 ms Hann window, 10 ms hop) and the time of mel frame 0's centre."""
    samples = np.ascontiguousarray(track.samples, dtype=np.float32)
    mel = mel_filterbank() @ _power(_frames(samples)).T
    return np.log(mel + LOG_FLOOR).astype(np.float32), track.start_s + WIN / 2 / SAMPLE_RATE


def mel_window(
    mel: np.ndarray, mel_t0: float, t_start: float, t_end: float, offset_s: float = 0.0
) -> np.ndarray:
    """[N_MELS, MEL_FRAMES] log-mel covering [t_start + offset_s, t_end + offset_s], linearly resampled to
    MEL_FRAMES frames (frame j at the centre of its 1/MEL_FRAMES of the span); what lies outside the audio
    is LOG_SILENCE."""
    return mel_windows(mel, mel_t0, t_start, t_end, np.array([offset_s]))[0]


def mel_windows(
    mel: np.ndarray, mel_t0: float, t_start: float, t_end: float, offsets_s: np.ndarray
) -> np.ndarray:
    """[len(offsets_s), N_MELS, MEL_FRAMES]: :func:`mel_window` at every offset, in one gather."""
    step = (t_end - t_start) / MEL_FRAMES
    times = t_start + (np.arange(MEL_FRAMES) + 0.5) * step  # [MEL_FRAMES]
    pos = (times[None, :] + np.asarray(offsets_s, np.float64)[:, None] - mel_t0) / HOP_S  # [K, M]
    n = mel.shape[1]
    inside = (pos >= 0) & (pos <= n - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, max(0, n - 2))
    i1 = np.minimum(i0 + 1, n - 1)
    w = np.clip(pos - i0, 0.0, 1.0).astype(np.float32)
    if n == 0:
        return np.full((len(pos), N_MELS, MEL_FRAMES), LOG_SILENCE, np.float32)
    out = mel[:, i0] * (1 - w)[None] + mel[:, i1] * w[None]  # [N_MELS, K, M]
    out = np.where(inside[None], out, np.float32(LOG_SILENCE))
    return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32)


def frame_energies(track: AudioTrack) -> tuple[np.ndarray, np.ndarray, float]:
    """Per 10 ms frame: energy in dBFS [F], share of energy in the voice band [F], and the time of frame
    0's centre."""
    samples = np.ascontiguousarray(track.samples, dtype=np.float32)
    frames = _frames(samples)
    power = _power(frames)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    band = (freqs >= SPEECH_BAND[0]) & (freqs <= SPEECH_BAND[1])
    total = power.sum(axis=1) + 1e-20
    share = power[:, band].sum(axis=1) / total
    # dBFS of the frame's mean square in the band (Parseval on the Hann-windowed frame; the window's mean
    # square of 0.375 undone, so a full-scale sine in the band is about -3 dBFS)
    band_ms = 2.0 * power[:, band].sum(axis=1) / (N_FFT * 0.375)
    db = 10.0 * np.log10(band_ms + 1e-12)
    return db.astype(np.float32), share.astype(np.float32), track.start_s + WIN / 2 / SAMPLE_RATE


def speech_frames(track: AudioTrack) -> tuple[np.ndarray, float]:
    """Per 10 ms frame whether it is judged speech [F] bool, and the time of frame 0's centre."""
    db, share, t0 = frame_energies(track)
    if len(db) == 0:
        return np.zeros(0, bool), t0
    floor = float(np.percentile(db, 10))
    speech = (db >= SPEECH_MIN_DBFS) & (db >= floor + SPEECH_OVER_FLOOR_DB) & (share >= SPEECH_BAND_SHARE)
    return speech, t0


def speech_fraction(track: AudioTrack, t_start: float, t_end: float) -> float:
    """Share of the 10 ms frames of [t_start, t_end] judged speech (frames outside the audio count as not
    speech); a window under MIN_SPEECH_FRACTION is never scored."""
    speech, t0 = speech_frames(track)
    return speech_fraction_of(speech, t0, t_start, t_end)


def speech_fraction_of(speech: np.ndarray, t0: float, t_start: float, t_end: float) -> float:
    """:func:`speech_fraction` from :func:`speech_frames`' result, so a track's windows share one pass."""
    times = np.arange(t_start, t_end, HOP_S)
    if len(times) == 0:
        return 0.0
    idx = np.round((times - t0) / HOP_S).astype(np.int64)
    ok = (idx >= 0) & (idx < len(speech))
    return float(np.sum(speech[idx[ok]])) / len(times)
