"""The latest few seconds of a live stream's audio: float32 mono at preprocessor.audio.SAMPLE_RATE, placed
on the stream's timeline by the time of each chunk pushed, in a fixed-size ring.

Why a ring and not a growing buffer: a stream has no end, and the audio-visual score only ever looks at a
track's last few windows and +-1 s around them (preprocessor/stream.py), so older audio is never needed;
the ring holds at most ``capacity`` samples whatever the stream's length.

Why chunks are placed by their time and not just appended: a sample's index must stay its time, or the
sync model would hear the voice at the wrong offset. A chunk that starts after the ring's end (a gap: lost
packets, a source that paused) is preceded by silence; one that starts before it (an overlap) loses its
overlapping head. Differences under ``TOLERANCE_S`` are rounding and ignored.
"""

from __future__ import annotations

import threading

import numpy as np

from preprocessor.audio import SAMPLE_RATE, AudioTrack

TOLERANCE_S = 0.005


class AudioRing:
    """Push chunks from one thread, take ``snapshot`` from another (both under one lock)."""

    def __init__(self, capacity_s: float) -> None:
        self.capacity = max(1, round(capacity_s * SAMPLE_RATE))
        self._buf = np.zeros(self.capacity, np.float32)
        self._end = 0  # samples placed since the origin (index of the next sample on the timeline)
        self._origin_s: float | None = None  # stream time of sample 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Samples the ring holds now (never more than ``capacity``)."""
        return min(self._end, self.capacity)

    @property
    def end_s(self) -> float | None:
        """Stream time just after the newest sample; None before any audio."""
        if self._origin_s is None:
            return None
        return self._origin_s + self._end / SAMPLE_RATE

    def push(self, samples: np.ndarray, t: float) -> None:
        """Place ``samples`` (float32 mono at SAMPLE_RATE) starting at stream time ``t`` (s)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        with self._lock:
            if self._origin_s is None:
                self._origin_s = t
            start = round((t - self._origin_s) * SAMPLE_RATE)
            tolerance = round(TOLERANCE_S * SAMPLE_RATE)
            if start > self._end + tolerance:
                self._write(np.zeros(0, np.float32), skip_silence=start - self._end)
            elif start < self._end - tolerance:
                samples = samples[self._end - start :]
            self._write(samples)

    def _write(self, samples: np.ndarray, skip_silence: int = 0) -> None:
        """Append ``skip_silence`` zeros then ``samples``; only the last ``capacity`` samples stay."""
        if skip_silence:
            zeros = min(skip_silence, self.capacity)
            self._end += skip_silence - zeros
            samples = np.concatenate([np.zeros(zeros, np.float32), samples])
        if len(samples) > self.capacity:
            self._end += len(samples) - self.capacity
            samples = samples[-self.capacity :]
        at = self._end % self.capacity
        first = min(len(samples), self.capacity - at)
        self._buf[at : at + first] = samples[:first]
        self._buf[: len(samples) - first] = samples[first:]
        self._end += len(samples)

    def snapshot(self) -> AudioTrack | None:
        """A copy of what the ring holds as an AudioTrack on the stream's timeline; None before any audio."""
        with self._lock:
            if self._origin_s is None or self._end == 0:
                return None
            n = self.held
            at = (self._end - n) % self.capacity
            samples = np.concatenate([self._buf[at : at + n], self._buf[: max(0, at + n - self.capacity)]])
            start_s = self._origin_s + (self._end - n) / SAMPLE_RATE
        return AudioTrack(samples=samples, start_s=start_s)
