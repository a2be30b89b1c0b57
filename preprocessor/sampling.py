"""Sample clips of frames: K short windows spread evenly over the video, decoding only what they need.

Why windows and not lone frames: the model reads clips of ``clip_len`` frames (temporal artefacts), so
each window is ``clip_len`` frames taken every ``stride``-th frame. Why this decode strategy:
- seek to the keyframe before a window only when that keyframe lies ahead of where the decoder already
  is (the container's keyframe index says where they are); otherwise decode forward, which is cheaper;
- convert to RGB only the frames kept, and only one window of full-resolution frames exists at a time
  (windows are yielded lazily), so memory stays flat however long the video is;
- a seek returns the frames at their times: the file's first frame is decoded before any seek (decoders
  learn stream-wide facts from it), the seek is trusted only once a keyframe packet at or before the
  window is demuxed (else retried further back, finally from the start), and frames presented before
  that keyframe are dropped;
- time comes from each frame's pts, so variable frame rate is handled; where a container has none (AVI:
  decode-order stamps; raw elementary streams: nothing) frames take the decode-order stamps in
  presentation order, or ``n / fps`` (see ``Probe.timing``); rotation metadata is applied so faces are
  upright;
- the decoder refuses frames over the probe's pixel limit (FFmpeg max_pixels), and a frame larger than
  the limit (a size change mid-stream) stops the analysis with too_large_frame before it is converted;
- a span that could not be analysed is never dropped silently: a warning says so when the stream ends
  before the duration, and when the duration is unknown (then only the first frames are sampled).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


def check_frame_pixels(frame: av.VideoFrame, limit: int) -> None:
    """Refuse a decoded frame over ``limit`` pixels (a size change mid-stream) before it is converted."""
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


class FrameSampler:
    """Yields one window (list of SampledFrame) at a time; ``warnings`` collects decoding problems."""

    def __init__(self, probe: Probe, plan: SamplePlan, threads: int = 2) -> None:
        self.probe = probe
        self.plan = plan
        self.threads = threads
        self.warnings: list[str] = []
        self.frames_decoded = 0  # every frame the decoder produced, kept or not (for the benchmark)
        self.seeks = 0  # seeks that landed on a keyframe before their target (for tests)
        self._broken = False
        self._ended_early = False
        self._skip_before = -math.inf  # packets presented before this time may skip non-reference frames
        self._fps = probe.info.fps or 25.0

    def windows(self) -> Iterator[list[SampledFrame]]:
        info = self.probe.info
        fps = self._fps
        eps = 0.5 / fps
        # The decoder limit also for the decoders avformat_find_stream_info runs while opening.
        options = decoder_options(self.probe.max_frame_pixels)
        with av.open(str(self.probe.path), options=options, metadata_errors="replace") as container:
            stream = container.streams.video[self.probe.stream_index]
            stream.thread_type = "AUTO"  # frame + slice threads: the decoder is most of the cost
            stream.codec_context.thread_count = self.threads
            stream.codec_context.options = decoder_options(self.probe.max_frame_pixels)
            decoder = self._decode(container, stream)  # from the start of the file
            pending: tuple[float, av.VideoFrame] | None = None
            position = -math.inf  # time of the last decoded frame
            sampled = 0
            for w, start in enumerate(self.plan.starts):
                target = self.probe.start_time + start
                self._skip_before = target - eps
                if position == -math.inf and target > eps:
                    # Decode the file's first frame before any seek: decoders learn stream-wide facts
                    # from it that no later keyframe repeats (FFmpeg's H.264 decoder reads the x264
                    # version in its SEI and works around old x264 bugs with it; FF++ c23 is 4:4:4 x264
                    # core 148, and a fresh decoder seeked to a later keyframe returned green frames).
                    pending = self._next(decoder, position)
                    if pending is not None:
                        position = pending[0]
                        self.frames_decoded += 1
                if self._should_seek(position, target):
                    pending = None
                    decoder = self._seek(container, stream, target)
                window: list[SampledFrame] = []
                taken = 0
                while len(window) < self.plan.clip_len:
                    item: tuple[float, av.VideoFrame] | None
                    if pending is not None:
                        item, pending = pending, None
                    else:
                        item = self._next(decoder, position)
                        if item is not None:
                            self.frames_decoded += 1
                    if item is None:
                        break
                    t, frame = item
                    self._check_size(frame)
                    position = t
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
        check_frame_pixels(frame, self.probe.max_frame_pixels)

    def _note_early_end(self, position: float) -> None:
        """A window ran out of frames well before the declared duration: say so once (truncated file)."""
        declared = self.probe.info.duration_s
        end = max(position - self.probe.start_time, 0.0)
        if declared - end > self.plan.clip_len * self.plan.stride / self._fps and not self._ended_early:
            self._ended_early = True
            self.warnings.append(
                f"the video stream ends at {end:.2f}s although the container declares {declared:.2f}s "
                "(truncated file?); only the frames before that were analysed"
            )

    def _should_seek(self, position: float, target: float) -> bool:
        """Seek only if a keyframe lies between where the decoder is and the target (else decode on)."""
        if not self.probe.seekable:
            return False  # no timestamps to seek by (raw streams), or no order-exact times after a seek
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
    ) -> Iterator[tuple[float, av.VideoFrame]]:
        """Decode from the last keyframe at or before ``target``. A seek is only trusted once the demuxer
        has shown a keyframe packet no later than the target: MPEG-TS seeks by timestamp to any packet,
        and a decoder fed from mid-GOP skips to the next keyframe (past the window) or invents frames.
        Otherwise seek further back (1, 2, 4, ... s before the last keyframe the probe knows before the
        target), finally to the start, which is what a sequential decode sees."""
        time_base = float(stream.time_base) if stream.time_base else 0.0
        eps = 0.5 / self._fps
        earlier = [k for k in self.probe.keyframes if k <= target + eps]
        aim = earlier[-1] if earlier else target
        for at in [target, *(aim - 2.0**i for i in range(40))]:  # the target, then 1, 2, 4, ... s back
            if not time_base or at <= self.probe.start_time + eps:
                break
            try:
                container.seek(int(at / time_base), backward=True, any_frame=False, stream=stream)
            except av.error.FFmpegError as exc:
                self.warnings.append(f"seek to {target:.2f}s failed ({exc}); decoding from the start")
                break
            found = self._find_keyframe(container, stream, target + eps)
            if found is not None:
                packet, key_time = found
                self.seeks += 1
                return self._decode(container, stream, packet, key_time)
        try:
            container.seek(int(self.probe.start_time / time_base) if time_base else 0, stream=stream)
        except av.error.FFmpegError:
            pass
        return self._decode(container, stream)

    def _find_keyframe(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, limit: float
    ) -> tuple[av.Packet, float] | None:
        """After a seek: the first keyframe packet and its time, if it is presented no later than
        ``limit``; None once the packets show that the keyframe before ``limit`` lies behind (read only,
        nothing decoded)."""
        time_base = float(stream.time_base) if stream.time_base else 0.0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    return None  # end of the stream
                decode_stamp = packet.dts if packet.dts is not None else packet.pts
                if packet.is_keyframe:
                    stamp = self._packet_time(packet, time_base)
                    return (packet, stamp) if stamp is not None and stamp <= limit else None
                if decode_stamp is not None and decode_stamp * time_base > limit:
                    return None  # every later keyframe is presented after the limit
        except av.error.FFmpegError:
            return None
        return None

    def _packet_time(self, packet: av.Packet, time_base: float) -> float | None:
        """Presentation time of a keyframe packet in the sampler's timing."""
        if self.probe.timing == "decode_order":
            stamp = packet.dts if packet.dts is not None else packet.pts
        else:
            stamp = packet.pts if packet.pts is not None else packet.dts
        return None if stamp is None else stamp * time_base

    def _decode(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        first: av.Packet | None = None,
        key_time: float | None = None,
    ) -> Iterator[tuple[float, av.VideoFrame]]:
        """(time, frame) in presentation order, decoding forward from the current position (from ``first``,
        the keyframe packet a seek found, presented at ``key_time``: frames before it, the leading
        pictures of an open GOP whose references lie before the seek, are dropped).

        With container timestamps (``pts`` timing), frames before the current window that no other frame
        refers to (non-reference B-frames) are never kept, so the decoder skips them: with typical encodes
        that is about half the frames between windows, and the costliest stage. Without them
        (``decode_order``, ``frame_rate``) every packet is decoded, and each frame takes the smallest
        decode-order stamp not yet taken: frames leave the decoder in presentation order, and a stream's
        presentation times are its decode-order stamps, sorted."""
        context = stream.codec_context
        time_base = float(stream.time_base) if stream.time_base else 0.0
        timing = self.probe.timing
        eps = 0.5 / self._fps
        stamps: list[float] = []  # decode-order stamps of the packets sent, not yet given to a frame
        sent = 0
        last = -math.inf
        mode: Any = "DEFAULT"  # AVDiscard names (PyAV types skip_frame as a Literal of them)
        packets = container.demux(stream)
        if first is not None:
            packets = itertools.chain([first], packets)
        for packet in packets:
            if timing == "pts":
                if packet.pts is not None:
                    wanted: Any = "NONREF" if packet.pts * time_base < self._skip_before else "DEFAULT"
                    if wanted != mode:
                        context.skip_frame = wanted
                        mode = wanted
            elif packet.size > 0:
                if timing == "decode_order" and packet.dts is not None and time_base:
                    heapq.heappush(stamps, packet.dts * time_base)
                else:
                    heapq.heappush(stamps, self.probe.start_time + sent / self._fps)
                sent += 1
            for frame in stream.decode(packet):
                t: float | None
                if timing == "pts":
                    t = float(frame.time) if frame.time is not None else None
                else:
                    t = heapq.heappop(stamps) if stamps else None
                if t is None:
                    t = last + 1 / self._fps if last > -math.inf else self.probe.start_time
                if key_time is not None and t < key_time - eps:
                    continue
                last = t
                yield t, frame

    def _next(
        self, decoder: Iterator[tuple[float, av.VideoFrame]], position: float
    ) -> tuple[float, av.VideoFrame] | None:
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
