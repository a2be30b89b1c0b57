"""Read a live source frame by frame for a stream session: a file, a capture device or a network URL.

Why its own reader and not FrameSampler: a file's analysis seeks to a few windows, a stream is decoded
forward from its first frame to its end (or forever), at the pace the frames come. What it shares with
the file path: a local file is probed first (so it is refused with the same codes: file_not_found,
not_a_video, ...; no duration limit, a stream session's memory does not grow with length), every decoder
gets the pixel limit (FFmpeg max_pixels), frames over it are refused, and rotation metadata is applied.

Sources: a path to a file; a V4L2 capture device (``/dev/video0``); a URL FFmpeg can open (``rtsp://``,
``http(s)://`` including HLS playlists, ``rtmp://``, ``udp://``, ``tcp://``, ``srt://``); a WebM/MP4 byte
stream arriving in chunks (:class:`ChunkPipe`, what a browser's MediaRecorder sends over a WebSocket).
A file is *paced* (played at its real rate) only when asked; the others come at their own pace.

Audio (for the audio-visual signal of a stream session): ``frames(on_audio=...)`` also demuxes the first
audio stream, resampled to mono float32 at preprocessor.audio.SAMPLE_RATE the way decode_audio does it
(channels averaged), and hands each chunk with its time on the frames' timeline (0 = the first video
frame): the first audio frame's time, then the samples counted, as for a file. An audio stream that breaks
stops the audio (``audio_warning`` says why, and ``on_audio_error`` hears it at once); the video goes on.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from preprocessor.audio import SAMPLE_RATE
from preprocessor.errors import VideoError
from preprocessor.probe import decoder_options, probe_for
from preprocessor.sampling import check_frame_pixels, to_display_rgb
from preprocessor.settings import PipelineSettings

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "hls")
# Seconds to open a network source and to wait for its next packet before it counts as gone.
NETWORK_TIMEOUT_S = (10.0, 10.0)
# Audio decoded before the first video frame (whose time is the timeline's origin) waits at most this long.
MAX_EARLY_AUDIO_S = 10.0

AudioCallback = Callable[[np.ndarray, float], object]  # (samples, stream time s); return value ignored


def source_kind(source: str) -> str:
    """``url``, ``device`` (V4L2) or ``file``."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in URL_SCHEMES:
        return "url"
    if source.startswith("/dev/video"):
        return "device"
    return "file"


class ChunkPipe(io.RawIOBase):
    """A container byte stream that arrives in chunks (WebSocket messages) read by FFmpeg as a file.

    Why a blocking pipe: FFmpeg pulls bytes as it demuxes, the network pushes them as they come; the
    decoder thread waits here for the next chunk, and ``feed`` waits while ``max_bytes`` are unread, so a
    byte stream never buffers without bound (bytes cannot be dropped like frames: the container would
    break). ``end`` is the end of the stream (the reader then gets EOF).
    """

    def __init__(self, max_bytes: int = 8 * 1024**2) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        with self._cond:
            while self._buffered >= self.max_bytes and not self._ended:
                self._cond.wait(0.1)
            if self._ended:
                return
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def readinto(self, buffer) -> int:
        with self._cond:
            while not self._chunks and not self._ended:
                self._cond.wait()
            if not self._chunks:
                return 0
            chunk = self._chunks.popleft()
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            if n < len(chunk):
                self._chunks.appendleft(chunk[n:])
            self._buffered -= n
            self._cond.notify_all()
            return n


@dataclass
class LiveFrame:
    t: float  # stream seconds from the first frame
    frame: av.VideoFrame

    def rgb(self):
        """Upright RGB pixels, converted only when the session analyses this frame."""
        return to_display_rgb(self.frame)


class LiveSource:
    """Opened source; ``frames()`` yields LiveFrame in order. ``realtime`` paces a file at its frame
    times (a device or URL is live anyway)."""

    def __init__(self, source: str | ChunkPipe, settings: PipelineSettings, realtime: bool = False) -> None:
        self.pipe = source if isinstance(source, ChunkPipe) else None
        self.source = "the byte stream" if self.pipe is not None else str(source)
        self.kind = "bytes" if self.pipe is not None else source_kind(str(source))
        self.settings = settings
        self.realtime = realtime and self.kind == "file"
        if self.kind == "file":
            # Same refusals as a file analysis; any length is fine for a stream.
            probe_for(Path(self.source), settings, max_duration_s=math.inf)
        self._container = self._open()
        streams = self._container.streams.video
        if not streams:
            self._container.close()
            raise VideoError("no_video_stream", f"{source} has no video stream; provide a source with video")
        self._stream = streams[0]
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = settings.threads
        self._stream.codec_context.options = decoder_options(settings.max_frame_pixels)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        audio = self._container.streams.audio
        self.has_audio = bool(audio)
        self._audio_stream = audio[0] if audio else None
        self.audio_warning: str | None = None

    @property
    def live(self) -> bool:
        """Whether frames come at their own pace (so a slow analysis must drop, not wait)."""
        return self.kind != "file" or self.realtime

    def _open(self) -> av.container.InputContainer:
        options = decoder_options(self.settings.max_frame_pixels)
        try:
            if self.kind == "device":
                return av.open(self.source, format="v4l2", options=options)
            if self.pipe is not None:
                # Stream facts come from the container header: read little before the first frame.
                return av.open(
                    self.pipe, "r", options={**options, "probesize": "65536", "analyzeduration": "500000"}
                )
            if self.kind == "url":
                return av.open(
                    self.source, options={**options, "rtsp_transport": "tcp"}, timeout=NETWORK_TIMEOUT_S
                )
            return av.open(self.source, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            if self.pipe is not None:
                raise VideoError(
                    "not_a_video", "the byte stream is not a WebM/MP4 video FFmpeg can read", reason=str(exc)
                ) from exc
            raise VideoError(
                "source_unavailable",
                f"cannot open {self.source}: {exc}; check that the device exists or the URL is reachable "
                "and serves video",
                source=self.source,
            ) from exc

    def frames(
        self,
        on_audio: AudioCallback | None = None,
        on_audio_error: Callable[[str], object] | None = None,
    ) -> Iterator[LiveFrame]:
        """The video frames in order; with ``on_audio`` the audio stream's chunks go to it as they are
        demuxed (module docstring)."""
        start_wall = time.perf_counter()
        first: float | None = None
        count = 0
        audio = _AudioTimeline(on_audio) if on_audio is not None and self._audio_stream else None
        streams = [self._stream] if audio is None else [self._stream, self._audio_stream]
        try:
            for frame in self._decode(streams, audio, on_audio_error):
                check_frame_pixels(frame, self.settings.max_frame_pixels)
                if audio is not None and count == 0:
                    audio.origin(frame.time)
                raw = frame.time
                if raw is None:
                    t = count / self.fps
                else:
                    first = raw if first is None else first
                    t = max(0.0, raw - first)
                count += 1
                if self.realtime:
                    wait = start_wall + t - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                yield LiveFrame(round(t, 4), frame)
            if audio is not None:
                audio.flush()
        except av.error.FFmpegError as exc:
            if count == 0:
                raise VideoError(
                    "corrupt_video", f"no frame could be decoded from {self.source}", reason=str(exc)
                ) from exc
            raise VideoError(
                "source_unavailable",
                f"{self.source} stopped after {count} frame(s): {exc}",
                source=self.source,
                frames=count,
            ) from exc
        if count == 0:
            raise VideoError("zero_frames", f"{self.source} gave no video frames")

    def _decode(
        self,
        streams: list,
        audio: _AudioTimeline | None,
        on_audio_error: Callable[[str], object] | None,
    ) -> Iterator[av.VideoFrame]:
        """The video frames; the audio packets, when demuxed too, decoded into ``audio`` on the way."""
        if audio is None:
            yield from self._container.decode(self._stream)
            return
        for packet in self._container.demux(*streams):
            if packet.stream.type != "audio":
                yield from packet.decode()
            elif self.audio_warning is None:
                try:
                    for frame in packet.decode():
                        audio.add(frame)
                except (av.error.FFmpegError, ValueError) as exc:
                    self.audio_warning = f"the audio stream broke ({exc}); the rest of it is unused"
                    if on_audio_error is not None:
                        on_audio_error(self.audio_warning)

    def close(self) -> None:
        self._container.close()


class _AudioTimeline:
    """Decoded audio frames -> mono SAMPLE_RATE chunks with their time on the frames' timeline."""

    def __init__(self, sink: AudioCallback) -> None:
        self.sink = sink
        self.resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        self.first: float | None = None  # the first audio frame's time (s, container clock)
        self.video_first: float | None = None  # the first video frame's (the timeline's origin)
        self.placed = 0  # samples handed on so far (or dropped while waiting for the origin)
        self.early: deque[np.ndarray] = deque()

    def origin(self, video_time: float | None) -> None:
        self.video_first = video_time if video_time is not None else (self.first or 0.0)
        self._hand_on()

    def add(self, frame: av.AudioFrame) -> None:
        if self.first is None:
            self.first = frame.time if frame.time is not None else 0.0
        for out in self.resampler.resample(frame):
            self.early.append(out.to_ndarray().mean(axis=0).astype(np.float32))
        if self.video_first is None:
            while sum(len(x) for x in self.early) > MAX_EARLY_AUDIO_S * SAMPLE_RATE:
                self.placed += len(self.early.popleft())
            return
        self._hand_on()

    def flush(self) -> None:
        for out in self.resampler.resample(None):
            self.early.append(out.to_ndarray().mean(axis=0).astype(np.float32))
        if self.video_first is not None:
            self._hand_on()

    def _hand_on(self) -> None:
        assert self.video_first is not None
        while self.early:
            samples = self.early.popleft()
            self.sink(samples, (self.first or 0.0) - self.video_first + self.placed / SAMPLE_RATE)
            self.placed += len(samples)
