"""Probe: find out what a file is before spending time on it, and refuse it with a specific reason.

Checks run cheapest first (size, container, streams, frame size, duration), then one frame is decoded: a
file whose first frame does not decode is refused here instead of half way through the pipeline, and the
first frame carries the rotation metadata that decides the display size.

Hostile inputs this guards against:
- frame size: a few hundred KB can declare 16000x16000 frames (~400 MB each decoded, GBs in the
  pipeline). The pixel limit is checked from the header before anything is decoded, and FFmpeg's own
  ``max_pixels`` is set on every decoder (also the one ``avformat_find_stream_info`` runs while opening),
  so a frame over the limit is never allocated. Frames too small or too thin to hold a detectable face
  (1x1, 90x8000) get their own code instead of failing deep in the detector.
- duration: a file written live (streamed MKV/WebM, e.g. a browser's MediaRecorder) has no duration in
  its header. Then the packets are scanned (demuxed, not decoded: I/O only) to measure it, stopping with
  ``too_long`` as soon as the limit is passed, so the limit holds and the sampler spreads its windows over
  the real span instead of the first seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import av

from deepfake.containers import SNIFF_BYTES, header_duration_s, is_animated_webp, sniff_video_container
from deepfake.contracts.schemas import VideoInfo
from preprocessor.errors import VideoError
from preprocessor.settings import (
    DEFAULT_DETECT_MAX_SIDE,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_MIN_FRAME_SIDE,
    PipelineSettings,
)

_NO_TIMESTAMPS = 0x80  # AVFMT_NOTIMESTAMPS: a raw elementary stream (Annex B H.264, HEVC, MPEG video)


@dataclass
class Probe:
    """VideoInfo plus what the sampler needs to seek: timing in seconds and the keyframe positions."""

    path: Path
    info: VideoInfo
    start_time: float  # seconds of the first frame's pts (often 0)
    keyframes: list[float] = field(default_factory=list)  # keyframe times in seconds; empty: unknown
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # the decoder refuses larger frames (max_pixels)
    duration_from: str = "header"  # "header", "packets" (measured by a scan) or "unknown"
    stream_index: int = 0  # which of the container's video streams is analysed (attached pictures skipped)
    # Where frame times come from: "pts" (the container's), "decode_order" (AVI: decode-order stamps put in
    # presentation order) or "frame_rate" (raw elementary streams: frame n at n / fps).
    timing: str = "pts"
    seekable: bool = True  # False: the sampler decodes forward only (no timestamps, or AVI with B-frames)
    warnings: list[str] = field(default_factory=list)  # facts the result should mention (extra streams)


def decoder_options(max_frame_pixels: int) -> dict[str, str]:
    """Codec options for every decoder we open: FFmpeg refuses to allocate frames over the limit."""
    return {"max_pixels": str(max_frame_pixels)}


def looks_like_video_container(path: Path) -> bool:
    """Whether ``path`` starts like a container we know (the upload sniffing's table): a file that does
    but cannot be opened is a broken video (corrupt_video), anything else not a video (not_a_video)."""
    return sniff_video_container(_read_head(path)) is not None


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(SNIFF_BYTES)


def _open(path: Path, max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS) -> av.container.InputContainer:
    """Open ``path`` for reading. ``options`` reach the decoders that avformat_find_stream_info opens to
    fill in stream parameters (for H.264 it decodes several frames: ~600 MB for a 16K file): by default
    they decode nothing (``skip_frame=all``; sizes, rates and timestamps come from the headers, parsers
    and packets) and refuse frames over ``max_frame_pixels`` in any case."""
    options = {"skip_frame": "all"}
    if max_frame_pixels is not None:
        options.update(decoder_options(max_frame_pixels))
    try:
        return av.open(str(path), "r", options=options, metadata_errors="replace")
    except av.error.EOFError as exc:
        raise VideoError(
            "zero_frames",
            "the file ends right after its header: it holds no video frames; "
            "export or upload the video again",
        ) from exc
    except av.error.FFmpegError as exc:
        if looks_like_video_container(path):
            raise VideoError(
                "corrupt_video",
                "the file starts like a video container but cannot be read (probably truncated by an "
                "interrupted download or upload); provide the complete file",
                reason=str(exc),
            ) from exc
        raise VideoError(
            "not_a_video",
            "this file is not a video FFmpeg can read; "
            "provide a video file such as MP4, MOV, MKV, AVI or WebM",
            reason=str(exc),
        ) from exc


def probe_for(path: Path, settings: PipelineSettings, max_duration_s: float | None = None) -> Probe:
    """:func:`probe` with the limits of ``settings`` (``max_duration_s`` overrides its duration limit)."""
    return probe(
        Path(path),
        settings.max_bytes,
        settings.max_duration_s if max_duration_s is None else max_duration_s,
        max_frame_pixels=settings.max_frame_pixels,
        min_frame_side=settings.min_frame_side,
        detect_max_side=settings.detect_max_side,
    )


def probe(
    path: Path,
    max_bytes: int,
    max_duration_s: float,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    min_frame_side: int = DEFAULT_MIN_FRAME_SIDE,
    detect_max_side: int = DEFAULT_DETECT_MAX_SIDE,
) -> Probe:
    """Describe ``path`` or raise VideoError (file_not_found, empty_file, too_large, not_a_video,
    no_video_stream, unsupported_codec, too_large_frame, frame_too_small, too_long, corrupt_video,
    zero_frames). ``min_frame_side`` applies to the frame and to its copy downscaled to
    ``detect_max_side`` for face detection (see :func:`check_frame_size`)."""
    path = Path(path)
    if not path.exists():
        raise VideoError("file_not_found", f"no such file: {path}; check the path", path=str(path))
    if not path.is_file():
        raise VideoError("not_a_file", f"{path} is not a regular file; pass a video file", path=str(path))
    size = path.stat().st_size
    if size == 0:
        raise VideoError("empty_file", "the file is empty (0 bytes); provide the complete video file")
    if size > max_bytes:
        raise VideoError(
            "too_large",
            f"the file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit; trim or compress it",
            size_bytes=size,
            max_bytes=max_bytes,
        )
    with _open(path, max_frame_pixels) as container:
        format_name = container.format.name
        if format_name.endswith("_pipe") or format_name == "image2":
            _refuse_image(path, format_name, max_frame_pixels)
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise VideoError(
                "no_video_stream",
                f"the file has no video stream (found: {', '.join(kinds) or 'nothing'}); "
                "provide a video with picture, not an audio-only file",
                streams=kinds,
            )
        stream_index, warnings = _pick_video_stream(container)
        stream = container.streams.video[stream_index]
        codec = stream.codec_context.name if stream.codec_context is not None else ""
        if stream.codec_context is None or not codec:
            raise VideoError(
                "unsupported_codec",
                "the video codec cannot be decoded here; "
                "re-encode the video to H.264 (e.g. ffmpeg -c:v libx264)",
            )
        # The stored frame size, from the header: checked before a single frame is decoded.
        width, height = stream.codec_context.width, stream.codec_context.height
        if not (width and height):
            # FFmpeg zeroes a size over max_pixels when it opens a decoder; read what the header states.
            width, height = _declared_size(path, stream_index)
        check_frame_size(width, height, max_frame_pixels, min_frame_side, detect_max_side)
        stream.codec_context.options = decoder_options(max_frame_pixels)
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start_time = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        timing, seekable = "pts", True
        if format_name == "avi":
            # AVI: decode-order stamps; the average rate counts the empty chunks of skipped ticks.
            timing, seekable = "decode_order", not stream.codec_context.has_b_frames
            fps = float(stream.guessed_rate or stream.average_rate or 0.0)
        elif container.format.flags & _NO_TIMESTAMPS:
            timing, seekable = "frame_rate", False
        duration = header_duration_s(container, stream) or 0.0
        if duration > max_duration_s:
            raise too_long(duration, max_duration_s)
        keyframes = (
            [e.timestamp * time_base for e in stream.index_entries if e.is_keyframe] if time_base else []
        )
        index_frames = sum(1 for e in stream.index_entries if e.size > 0)
        first = _first_frame(container, stream)
        # The decoded size is the truth (a header may leave it out); the decoder's max_pixels already
        # refused anything over the limit.
        check_frame_size(first.width, first.height, max_frame_pixels, min_frame_side, detect_max_side)
        rotation = int(round(first.rotation)) % 360 if first.rotation else 0
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        frame_count = stream.frames or None
        if format_name == "avi" and index_frames:
            frame_count = index_frames  # stream.frames counts the empty chunks too
        has_audio = bool(container.streams.audio)
        duration_from = "header" if duration else "unknown"
    if not duration:
        # Streamed files state no duration: measure it from the packets (and refuse past the limit); raw
        # streams have no timestamps at all: their packets are counted at the frame rate.
        scan = scan_packets(path, max_duration_s, max_frame_pixels, stream_index)
        if scan.duration_s > 0:
            duration, duration_from = scan.duration_s, "packets"
            start_time = scan.start_s
            frame_count = frame_count or scan.packets or None
            if len(scan.keyframes) > len(keyframes):
                keyframes = scan.keyframes
    elif len(keyframes) <= 1 and seekable:
        # No keyframe index (MPEG-TS), or one that lists only the first (Matroska Cues can): find the
        # keyframes in the packets, so seeks can aim at them. The header's duration stands (the limit was
        # checked on it); the scan only reads, nothing is decoded.
        scanned = scan_packets(path, math.inf, max_frame_pixels, stream_index).keyframes
        if len(scanned) > len(keyframes):
            keyframes = scanned
    if not fps and duration and frame_count:
        fps = frame_count / duration
    if not duration and fps and frame_count:
        duration = frame_count / fps
        duration_from = "frame_count"
    if duration > max_duration_s:
        raise too_long(duration, max_duration_s)
    info = VideoInfo(
        container=format_name,
        codec=codec,
        duration_s=round(duration, 4),
        fps=round(fps, 4),
        width=width,
        height=height,
        rotation=rotation,
        has_audio=has_audio,
        frame_count=frame_count,
        size_bytes=size,
    )
    return Probe(
        path=path,
        info=info,
        start_time=start_time,
        keyframes=keyframes,
        max_frame_pixels=max_frame_pixels,
        duration_from=duration_from,
        stream_index=stream_index,
        timing=timing,
        seekable=seekable,
        warnings=warnings,
    )


def _pick_video_stream(container: av.container.InputContainer) -> tuple[int, list[str]]:
    """The video stream to analyse (position in ``container.streams.video``): the first that is not an
    attached picture (cover art), with a warning when there are others, which are not analysed."""
    videos = list(container.streams.video)
    attached = av.stream.Disposition.attached_pic
    moving = [i for i, s in enumerate(videos) if not (s.disposition & attached)] or [0]
    chosen = moving[0]
    warnings = []
    if len(moving) > 1:
        picked = videos[chosen].codec_context
        size = f"{picked.width}x{picked.height} {picked.name}" if picked is not None else "the first"
        warnings.append(
            f"the file holds {len(moving)} video streams; only the first ({size}) was analysed, "
            f"the other {len(moving) - 1} were ignored"
        )
    return chosen, warnings


def _refuse_image(path: Path, format_name: str, max_frame_pixels: int) -> None:
    """Still images are not videos. An animated WebP is one unless this FFmpeg can decode more than one
    of its frames (FFmpeg 8's WebP decoder refuses the animation chunks): then it gets its own code."""
    kind = format_name.removesuffix("_pipe")
    if kind == "webp" and is_animated_webp(_read_head(path)):
        if _decodes_frames(path, 2, max_frame_pixels) >= 2:
            return
        raise VideoError(
            "animated_image",
            "this is an animated WebP image, and its frames cannot be decoded here as video; "
            "export or convert it to a video file (MP4 or WebM) and provide that",
            format=format_name,
        )
    raise VideoError(
        "not_a_video",
        f"this is a still image ({kind}), not a video; provide a video file",
        format=format_name,
    )


def _decodes_frames(path: Path, wanted: int, max_frame_pixels: int) -> int:
    """How many frames (up to ``wanted``) the first video stream of ``path`` decodes to."""
    count = 0
    try:
        with _open(path, max_frame_pixels) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = decoder_options(max_frame_pixels)
            for _ in container.decode(stream):
                count += 1
                if count >= wanted:
                    break
    except (av.error.FFmpegError, VideoError):
        pass
    return count


def first_frame_format(path: Path, max_frame_pixels: int) -> tuple[int, int, str] | None:
    """(width, height, pixel format) of the first frame of the file's largest video stream: one frame is
    decoded (one decoder thread), because headers do not state the pixel format before a decoder has run.
    None for a file the probe will refuse anyway (unreadable, frames over ``max_frame_pixels``, which are
    never allocated, no frame): the probe then says why."""
    try:
        with _open(path, max_frame_pixels) as container:
            streams = [s for s in container.streams.video if s.codec_context is not None]
            if not streams:
                return None
            stream = max(streams, key=lambda s: s.codec_context.width * s.codec_context.height)
            if stream.codec_context.width * stream.codec_context.height > max_frame_pixels:
                return None
            stream.codec_context.options = decoder_options(max_frame_pixels)
            stream.codec_context.thread_count = 1
            frame = _first_frame(container, stream)
            return frame.width, frame.height, frame.format.name
    except (VideoError, av.error.FFmpegError):
        return None


def _declared_size(path: Path, stream_index: int = 0) -> tuple[int, int]:
    """A video stream's frame size as the headers state it (no decoder limit, nothing decoded)."""
    with _open(path, max_frame_pixels=None) as container:
        context = container.streams.video[stream_index].codec_context
        return (context.width, context.height) if context is not None else (0, 0)


def _first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.EOFError:
        pass
    except av.error.FFmpegError as exc:
        raise VideoError(
            "corrupt_video",
            "the first video frame cannot be decoded (damaged or truncated file); provide an intact file",
            reason=str(exc),
        ) from exc
    raise VideoError("zero_frames", "the video stream holds no decodable frames; provide a video with frames")


@dataclass
class PacketScan:
    """What demuxing the whole video stream (no decoding) says about it."""

    start_s: float  # earliest packet time
    duration_s: float  # latest packet end minus start_s
    packets: int
    keyframes: list[float]


def scan_packets(
    path: Path,
    max_duration_s: float,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    stream_index: int = 0,
) -> PacketScan:
    """Measure the video stream's span from its packets' timestamps, reading the file once without
    decoding; raises ``too_long`` as soon as the span passes ``max_duration_s`` (so a 10-hour stream
    costs no more than reading up to the limit). A stream without timestamps (raw H.264) is timed by
    its frame rate: packet ``n`` at ``n / fps``."""
    with _open(path, max_frame_pixels) as container:
        stream = container.streams.video[stream_index]
        stamped = not (container.format.flags & _NO_TIMESTAMPS)
        time_base = float(stream.time_base) if stream.time_base else 0.0
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        start = end = None
        packets = 0
        keyframes: list[float] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                packets += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None and time_base and stamped:
                    t = stamp * time_base
                elif fps:
                    t = (packets - 1) / fps  # no timestamps: derived from the frame rate
                else:
                    continue
                length = (
                    packet.duration * time_base
                    if packet.duration and time_base and stamped
                    else (1 / fps if fps else 0.0)
                )
                start = t if start is None else min(start, t)
                end = t + length if end is None else max(end, t + length)
                if packet.is_keyframe:
                    keyframes.append(t)
                if end - start > max_duration_s:
                    raise too_long(end - start, max_duration_s, at_least=True)
        except av.error.FFmpegError:
            pass  # a damaged tail: the span up to it is what the sampler will find as well
    if start is None or end is None:
        return PacketScan(0.0, 0.0, packets, [])
    return PacketScan(start, end - start, packets, sorted(keyframes))


def too_long(
    duration: float, max_duration_s: float, at_least: bool = False, hint: str = "", **details: object
) -> VideoError:
    """The one ``too_long`` refusal (the pipeline's and the gateway's); `hint` replaces the advice."""
    lasts = "lasts more than" if at_least else "lasts"
    advice = hint or "; cut it shorter"
    return VideoError(
        "too_long",
        f"the video {lasts} {duration:.0f} s, over the {max_duration_s:.0f} s limit{advice}",
        duration_s=round(duration, 3),
        max_duration_s=max_duration_s,
        **details,
    )


def check_frame_size(
    width: int,
    height: int,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    min_frame_side: int = DEFAULT_MIN_FRAME_SIDE,
    detect_max_side: int = DEFAULT_DETECT_MAX_SIDE,
) -> None:
    """Refuse frames over the pixel limit (``too_large_frame``) and frames that cannot hold a face the
    detector can see (``frame_too_small``): a shorter side under ``min_frame_side``, or one that would fall
    under it once the frame is downscaled so its longer side is ``detect_max_side`` (a 90x8000 frame is
    seen at 7x640). A size of 0 means not known yet (some headers leave it to the first frame): no check."""
    if width <= 0 or height <= 0:
        return
    pixels = width * height
    size = f"{width}x{height}"
    if pixels > max_frame_pixels:
        raise VideoError(
            "too_large_frame",
            f"the frames are {size} pixels ({pixels / 1e6:.1f} MP), over the limit of "
            f"{max_frame_pixels / 1e6:.1f} MP per frame (8K UHD is 33.2 MP); scale the video down, "
            "e.g. ffmpeg -vf scale=-2:2160",
            width=width,
            height=height,
            pixels=pixels,
            max_frame_pixels=max_frame_pixels,
        )
    short, long = min(width, height), max(width, height)
    if short < min_frame_side:
        raise VideoError(
            "frame_too_small",
            f"the frames are {size} pixels, too small to hold a face (each side must be at least "
            f"{min_frame_side} px); provide the video at its original size",
            width=width,
            height=height,
            min_frame_side=min_frame_side,
        )
    seen = round(short * min(1.0, detect_max_side / long))
    if seen < min_frame_side:
        raise VideoError(
            "frame_too_small",
            f"the frames are {size} pixels, too thin for their length: faces are searched on a copy at "
            f"most {detect_max_side} px long, where the shorter side would be {seen} px (at least "
            f"{min_frame_side} px needed); crop the video to the part that shows the people",
            width=width,
            height=height,
            min_frame_side=min_frame_side,
            detect_max_side=detect_max_side,
        )
