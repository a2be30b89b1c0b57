"""Speech-like audio for synthetic videos, muxed with PyAV: what the audio-visual tests and the benchmark
give the sync model to score (a steady tone is not speech to preprocessor.audio's voice-activity test).

The signal is a voiced buzz (a 110-190 Hz fundamental with harmonics up to 3 kHz, the voice band) cut into
syllables of 120-250 ms with 60-150 ms pauses, so its energy rises and falls like speech over its own
noise floor. Nothing is downloaded: it is made from a seeded generator.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 16000


def speech_like(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """float32 mono samples in [-1, 1]: syllables of a harmonic buzz separated by short pauses."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate), np.float32)
    pos = 0
    while pos < len(out):
        n = int(rng.uniform(0.12, 0.25) * rate)
        t = np.arange(min(n, len(out) - pos)) / rate
        f0 = rng.uniform(110, 190)
        buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, int(3000 / f0)))
        out[pos : pos + len(t)] = 0.15 * np.sin(np.pi * t / (n / rate)) * buzz / 2
        pos += n + int(rng.uniform(0.06, 0.15) * rate)
    return np.clip(out, -1, 1)


def mux_audio(video: Path, out: Path, samples: np.ndarray, rate: int = RATE, delay_s: float = 0.0) -> Path:
    """A copy of ``video`` (its video packets as they are, its audio left out) with ``samples`` as its AAC
    audio track, starting ``delay_s`` after the video (a shifted copy puts the voice off the lips)."""
    with av.open(str(video)) as source, av.open(str(out), "w") as target:
        in_video = source.streams.video[0]
        out_video = target.add_stream_from_template(in_video)
        audio = target.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for packet in source.demux(in_video):
            if packet.dts is None:
                continue
            packet.stream = out_video
            target.mux(packet)
        start = int(round(delay_s * rate))
        for offset in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(
                samples[None, offset : offset + 1024], format="flt", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start + offset
            for packet in audio.encode(frame):
                target.mux(packet)
        for packet in audio.encode():
            target.mux(packet)
    return out


def mux_garbage_audio(video: Path, out: Path, packets: int = 50, seed: int = 0) -> Path:
    """A copy of ``video`` (Matroska) with an MP3 audio stream whose packets are random bytes: an audio
    stream that is there but cannot be decoded."""
    rng = np.random.default_rng(seed)
    with av.open(str(video)) as source, av.open(str(out), "w") as target:
        out_video = target.add_stream_from_template(source.streams.video[0])
        audio = target.add_stream("mp3", rate=RATE)
        audio.layout = "mono"
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = out_video
            target.mux(packet)
        for i in range(packets):
            junk = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            junk.pts = junk.dts = i * 1152
            junk.time_base = Fraction(1, RATE)
            junk.stream = audio
            target.mux(junk)
    return out
