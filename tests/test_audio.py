"""Audio in the pipeline (preprocessor/audio.py): decoding, alignment to the video's timeline, log-mel
windows and voice activity, on clips muxed with PyAV where every click and every offset is known."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from preprocessor.audio import (
    HOP_S,
    LOG_SILENCE,
    MEL_FRAMES,
    MIN_SPEECH_FRACTION,
    N_MELS,
    SAMPLE_RATE,
    AudioTrack,
    decode_audio,
    frame_energies,
    log_mel,
    mel_window,
    speech_fraction,
)
from preprocessor.errors import AudioError
from tests import synth

CLICKS_S = (1.0, 2.3)


def write_av(
    path: Path,
    audio: np.ndarray,
    rate: int,
    video_s: float = 3.0,
    audio_start_s: float = 0.0,
    codec: str = "pcm_s16le",
    fps: int = 25,
) -> Path:
    """A 64x64 video of ``video_s`` seconds with ``audio`` [channels, samples] at ``rate`` Hz starting at
    ``audio_start_s`` on the video's timeline (pcm_s16le: exact samples; aac: an encoder's priming)."""
    channels = audio.shape[0]
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width = video.height = 64
    video.pix_fmt = "yuv420p"
    stream = container.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
    for i in range(int(video_s * fps)):
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (i * 3) % 255, np.uint8), format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    start = int(round(audio_start_s * rate))
    for s in range(0, audio.shape[1], 1024):
        x = audio[:, s : s + 1024]
        if codec == "aac":
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x, np.float32), format="fltp", layout=stream.layout.name
            )
        else:
            pcm = (np.clip(x.T.reshape(1, -1), -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts = start + s
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def clicks(
    rate: int, seconds: float = 3.0, channels: int = 1, at: tuple[float, ...] = CLICKS_S
) -> np.ndarray:
    """Silence with a 1 ms full-scale click at each time of ``at`` (s from the audio's first sample)."""
    x = np.zeros((channels, int(seconds * rate)), np.float32)
    for t in at:
        x[:, int(t * rate) : int(t * rate) + rate // 1000] = 0.9
    return x


def speech_like(rate: int, seconds: float, f0: float = 140.0, level: float = 0.1) -> np.ndarray:
    """A voiced-speech stand-in: 12 harmonics of ``f0`` whose loudness rises and falls 4 times a second
    (syllables), with short silent gaps between."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 13))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    return (level * tone * envelope / np.abs(tone).max()).astype(np.float32)[None]


def click_times(track: AudioTrack) -> np.ndarray:
    """Video-timeline times of the loudest 10 ms frame near each click."""
    db, _, t0 = frame_energies(track)
    times = t0 + np.arange(len(db)) * HOP_S
    return np.array(
        [times[(np.abs(times - c) < 0.6)][np.argmax(db[np.abs(times - c) < 0.6])] for c in CLICKS_S]
    )


@pytest.mark.parametrize(("codec", "ext", "tol"), [("pcm_s16le", "mkv", 0.011), ("aac", "mp4", 0.03)])
@pytest.mark.parametrize("audio_start_s", [0.0, 0.4])
def test_clicks_land_at_their_time_on_the_video_timeline(tmp_path, codec, ext, tol, audio_start_s):
    path = write_av(
        tmp_path / f"clicks.{ext}", clicks(48000), 48000, audio_start_s=audio_start_s, codec=codec
    )
    track = decode_audio(path)
    assert track is not None
    assert track.start_s == pytest.approx(audio_start_s, abs=tol)
    assert click_times(track) == pytest.approx(np.array(CLICKS_S) + audio_start_s, abs=tol)


def test_mel_window_finds_the_click_in_a_shifted_copy_at_its_offset(tmp_path):
    """The same clicks 0.4 s late: the window of the original at [0.9, 1.2] s and the late copy's window
    at offset +0.4 s both have the click in the same mel frame (10/30 of the way in)."""
    on_time = decode_audio(write_av(tmp_path / "a.mkv", clicks(16000), 16000))
    late = decode_audio(write_av(tmp_path / "b.mkv", clicks(16000), 16000, audio_start_s=0.4))
    assert on_time is not None and late is not None
    expected = round((1.0 - 0.9) / 0.3 * MEL_FRAMES)
    for track, offset in ((on_time, 0.0), (late, 0.4)):
        mel, t0 = log_mel(track)
        window = mel_window(mel, t0, 0.9, 1.2, offset_s=offset)
        assert window.shape == (N_MELS, MEL_FRAMES) and window.dtype == np.float32
        assert abs(int(np.argmax(window.mean(axis=0))) - expected) <= 2
    mel, t0 = log_mel(on_time)
    # The late copy read without the offset has no click there: that is what a sync model's curve sees.
    mel_late, t0_late = log_mel(late)
    assert mel_window(mel_late, t0_late, 0.9, 1.2).max() < mel_window(mel, t0, 0.9, 1.2).max() - 10


def test_no_audio_stream_gives_none(tmp_path):
    video = synth.write_face_video(tmp_path / "silent.mp4", n_frames=10)
    assert decode_audio(video.path) is None


def test_a_file_that_is_not_media_raises_audio_error(tmp_path):
    path = synth.write_random_bytes(tmp_path / "noise.mp4")
    with pytest.raises(AudioError):
        decode_audio(path)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_rates_and_layouts_become_mono_16k(tmp_path, rate, channels):
    t = np.arange(2 * rate) / rate
    tone = np.repeat((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None], channels, axis=0)
    track = decode_audio(write_av(tmp_path / "tone.mkv", tone, rate, video_s=2.0))
    assert track is not None and track.samples.dtype == np.float32 and track.samples.ndim == 1
    assert len(track.samples) == pytest.approx(2 * SAMPLE_RATE, abs=SAMPLE_RATE * 0.02)
    spectrum = np.abs(np.fft.rfft(track.samples[4000:20000]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / 16000
    assert peak_hz == pytest.approx(1000, abs=2)
    assert np.abs(track.samples[4000:20000]).max() == pytest.approx(0.5, abs=0.05)  # stereo is averaged


@pytest.mark.parametrize("audio_s", [1.5, 5.0])
def test_audio_shorter_or_longer_than_the_video(tmp_path, audio_s):
    track = decode_audio(write_av(tmp_path / "len.mkv", speech_like(16000, audio_s), 16000, video_s=3.0))
    assert track is not None
    assert track.duration_s == pytest.approx(audio_s, abs=0.01)
    mel, t0 = log_mel(track)
    inside = mel_window(mel, t0, 0.5, 1.1)
    assert (inside.max(axis=0) > LOG_SILENCE + 10).mean() > 0.5  # sound in most frames
    if audio_s < 3.0:  # the video goes on after the audio ends: silence, not speech, not an error
        after = mel_window(mel, t0, 2.0, 2.6)
        assert np.all(after == np.float32(LOG_SILENCE))
        assert speech_fraction(track, 2.0, 2.6) == 0.0
    assert decode_audio(tmp_path / "len.mkv", max_duration_s=1.0).duration_s == pytest.approx(1.0, abs=0.01)


def test_voice_activity_speech_silence_and_a_silent_start(tmp_path):
    """Speech-like sound after 1.5 s of digital silence: the silent start is not speech, the rest is."""
    sound = np.concatenate([np.zeros((1, 24000), np.float32), speech_like(16000, 2.5)], axis=1)
    track = decode_audio(write_av(tmp_path / "speech.mkv", sound, 16000, video_s=4.0))
    assert track is not None
    assert speech_fraction(track, 0.0, 1.4) == 0.0
    assert speech_fraction(track, 2.0, 3.5) >= MIN_SPEECH_FRACTION
    silent = decode_audio(write_av(tmp_path / "zeros.mkv", np.zeros((1, 48000), np.float32), 16000))
    assert silent is not None and speech_fraction(silent, 0.0, 3.0) == 0.0


def test_a_hum_is_not_speech():
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    hum = AudioTrack((0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), 0.0)
    assert speech_fraction(hum, 0.0, 3.0) == 0.0


def test_real_footage_speech_is_found(data_dir):
    """GRID clips are one spoken sentence: part of each is speech, their leading silence is not."""
    grid = sorted((data_dir / "videos" / "GRID_audiovisual_corpus").rglob("*.mp4"))
    if not grid:
        pytest.skip("no GRID clip in the data folder")
    track = decode_audio(grid[0])
    assert track is not None and track.duration_s > 1.0
    assert speech_fraction(track, 0.0, track.duration_s) > 0.15
