"""Sample clips of frames: K short windows spread evenly over the video, decoding only what they need.

Why windows and not lone frames: the model reads clips of ``clip_len`` frames (temporal artefacts), so
each window is ``clip_len`` frames taken every ``stride``-th frame. Why this decode strategy:
- seek to the keyframe before a window only when that keyframe lies ahead of where the decoder already
  is (the container's keyframe index says where they are); otherwise decode forward, which is cheaper;
- convert to RGB only the frames kept, and only one window of full-resolution frames exists at a time
  (windows are yielded lazily), so memory stays flat however long the video is;
- time comes from each frame's pts, so variable frame rate is handled; rotation metadata is applied so
  faces are upright;
- the decoder refuses frames over the probe's pixel limit (FFmpeg max_pixels), and a frame larger than
  the limit (a size change mid-stream) stops the analysis with too_large_frame before it is converted;
- a span that could not be analysed is never dropped silently: a warning says so when the stream ends
  before the duration, and when the duration is unknown (then only the first frames are sampled).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import av
import cv2
import numpy as np

from preprocessor.errors import VideoError
from preprocessor.probe import Probe, decoder_options

_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


@dataclass
class SampledFrame:
    index: int  # position among the sampled frames (0..n-1)
    frame_index: int  # estimated frame number in the stream (t * fps)
    t: float  # seconds from the start of the video
    window: int  # which window (clip) it belongs to
    rgb: np.ndarray  # [H, W, 3] uint8, display orientation


@dataclass
class SamplePlan:
    """Where the windows start (seconds from the video start) and how frames are taken inside them."""

    starts: list[float]
    clip_len: int
    stride: int


def plan_windows(duration_s: float, fps: float, frames: int, clip_len: int, stride: int) -> SamplePlan:
    """Spread ceil(frames / clip_len) windows evenly; shrink the stride and the window count for short
    videos so windows never overlap (a 1-second clip gets fewer, denser frames rather than duplicates)."""
    windows = max(1, math.ceil(frames / clip_len))
    total = (
        max(1, int(round(duration_s * fps))) if fps > 0 and duration_s > 0 else windows * clip_len * stride
    )
    while windows > 1 and total < windows * clip_len:
        windows -= 1
    stride = max(1, min(stride, total // (windows * clip_len)))
    span = clip_len * stride / fps if fps > 0 else 0.0
    room = max(0.0, duration_s - span)
    if windows == 1:
        starts = [room / 2]
    else:
        # Window centres at (2i+1)/(2K) of the video, clamped so each window fits inside it.
        starts = [
            min(max(duration_s * (2 * i + 1) / (2 * windows) - span / 2, 0.0), room) for i in range(windows)
        ]
    return SamplePlan(starts=starts, clip_len=clip_len, stride=stride)


def to_display_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB ndarray of ``frame`` turned upright according to its rotation metadata."""
    rgb = frame.to_ndarray(format="rgb24")
    rotation = int(round(frame.rotation or 0)) % 360
    return cv2.rotate(rgb, _ROTATE[rotation]) if rotation in _ROTATE else rgb


class FrameSampler:
    """Yields one window (list of SampledFrame) at a time; ``warnings`` collects decoding problems."""

    def __init__(self, probe: Probe, plan: SamplePlan, threads: int = 2) -> None:
        self.probe = probe
        self.plan = plan
        self.threads = threads
        self.warnings: list[str] = []
        self.frames_decoded = 0  # every frame the decoder produced, kept or not (for the benchmark)
        self._broken = False
        self._ended_early = False
        self._skip_before = -math.inf  # packets presented before this time may skip non-reference frames

    def windows(self) -> Iterator[list[SampledFrame]]:
        info = self.probe.info
        fps = info.fps or 25.0
        eps = 0.5 / fps
        # The decoder limit also for the decoders avformat_find_stream_info runs while opening.
        with av.open(str(self.probe.path), options=decoder_options(self.probe.max_frame_pixels)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads: the decoder is most of the cost
            stream.codec_context.thread_count = self.threads
            stream.codec_context.options = decoder_options(self.probe.max_frame_pixels)
            decoder: Iterator[av.VideoFrame] | None = None
            position = -math.inf  # time of the last decoded frame
            sampled = 0
            for w, start in enumerate(self.plan.starts):
                target = self.probe.start_time + start
                self._skip_before = target - eps
                if decoder is None or self._should_seek(position, target):
                    decoder = self._seek(container, stream, target)
                window: list[SampledFrame] = []
                taken = 0
                while len(window) < self.plan.clip_len:
                    frame = self._next(decoder, position)
                    if frame is None:
                        break
                    self._check_size(frame)
                    t = float(frame.time) if frame.time is not None else position + 1 / fps
                    position = t
                    self.frames_decoded += 1
                    if t < target - eps:
                        continue
                    if taken % self.plan.stride == 0:
                        t_rel = max(0.0, t - self.probe.start_time)
                        window.append(
                            SampledFrame(
                                sampled, int(round(t_rel * fps)), round(t_rel, 4), w, to_display_rgb(frame)
                            )
                        )
                        sampled += 1
                    taken += 1
                if len(window) < self.plan.clip_len and not self._broken:
                    self._note_early_end(position)
                if window:
                    yield window
                if self._broken:
                    break
        if sampled == 0:
            raise VideoError(
                "corrupt_video", "no frame could be decoded from the video stream; provide an intact file"
            )
        if info.duration_s <= 0:
            end = max(position - self.probe.start_time, 0.0)
            self.warnings.append(
                "the video's duration is unknown (neither its header nor its packets' timestamps state it); "
                f"only its first {end:.2f}s were analysed"
            )

    def _check_size(self, frame: av.VideoFrame) -> None:
        limit = self.probe.max_frame_pixels
        if frame.width * frame.height > limit:
            raise VideoError(
                "too_large_frame",
                f"a frame of {frame.width}x{frame.height} pixels appears in the stream, over the limit of "
                f"{limit / 1e6:.1f} MP per frame; scale the video down, e.g. ffmpeg -vf scale=-2:2160",
                width=frame.width,
                height=frame.height,
                pixels=frame.width * frame.height,
                max_frame_pixels=limit,
            )

    def _note_early_end(self, position: float) -> None:
        """A window ran out of frames well before the declared duration: say so once (truncated file)."""
        declared = self.probe.info.duration_s
        end = max(position - self.probe.start_time, 0.0)
        fps = self.probe.info.fps or 25.0
        if declared - end > self.plan.clip_len * self.plan.stride / fps and not self._ended_early:
            self._ended_early = True
            self.warnings.append(
                f"the video stream ends at {end:.2f}s although the container declares {declared:.2f}s "
                "(truncated file?); only the frames before that were analysed"
            )

    def _should_seek(self, position: float, target: float) -> bool:
        """Seek only if a keyframe lies between where the decoder is and the target (else decode on)."""
        if position == -math.inf:
            return target > 0
        if target <= position:
            return False
        keyframes = self.probe.keyframes
        if keyframes:
            return any(position < k <= target for k in keyframes)
        return target - position > 2.0  # no index: seek only across a long gap

    def _seek(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, target: float
    ):
        if target > 0:
            offset = int(target / float(stream.time_base))
            try:
                container.seek(offset, backward=True, any_frame=False, stream=stream)
            except av.error.FFmpegError as exc:
                self.warnings.append(f"seek to {target:.2f}s failed ({exc}); decoding from the start")
                container.seek(0, stream=stream)
        return self._decode(container, stream)

    def _decode(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decode forward from the current position. Frames before the current window that no other
        frame refers to (non-reference B-frames) are never kept, so the decoder skips them: with
        typical encodes that is about half the frames between windows, and the costliest stage."""
        context = stream.codec_context
        time_base = float(stream.time_base)
        mode = "DEFAULT"
        for packet in container.demux(stream):
            if packet.pts is not None:
                wanted = "NONREF" if packet.pts * time_base < self._skip_before else "DEFAULT"
                if wanted != mode:
                    context.skip_frame = wanted
                    mode = wanted
            yield from stream.decode(packet)

    def _next(self, decoder: Iterator[av.VideoFrame], position: float) -> av.VideoFrame | None:
        try:
            return next(decoder)
        except StopIteration:
            return None
        except av.error.EOFError:
            return None
        except av.error.FFmpegError as exc:
            self._broken = True
            self.warnings.append(
                f"decoding stopped after {max(position, 0):.2f}s: {exc} (truncated or damaged file?)"
            )
            return None
