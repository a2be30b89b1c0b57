"""Probe: find out what a file is before spending time on it, and refuse it with a specific reason.

Checks run cheapest first (size, container, streams, duration), then one frame is decoded: a file whose
first frame does not decode is refused here instead of half way through the pipeline, and the first
frame carries the rotation metadata that decides the display size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av

from deepfake.schemas import VideoInfo
from preprocessor.errors import VideoError

# Leading bytes of containers we know: a file that starts like a video but cannot be opened is a broken
# video (corrupt_video), anything else is not a video at all (not_a_video).
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
_SIGNATURES = (b"\x1a\x45\xdf\xa3", b"RIFF", b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75")


@dataclass
class Probe:
    """VideoInfo plus what the sampler needs to seek: timing in seconds and the keyframe positions."""

    path: Path
    info: VideoInfo
    start_time: float  # seconds of the first frame's pts (often 0)
    keyframes: list[float] = field(default_factory=list)  # keyframe times in seconds; empty: unknown


def looks_like_video_container(path: Path) -> bool:
    head = _read_head(path)
    return head[4:8] in _MP4_BOXES or head.startswith(_SIGNATURES)


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(16)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r")
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


def probe(path: Path, max_bytes: int, max_duration_s: float) -> Probe:
    """Describe ``path`` or raise VideoError (file_not_found, empty_file, too_large, not_a_video,
    no_video_stream, unsupported_codec, too_long, corrupt_video, zero_frames)."""
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
    with _open(path) as container:
        format_name = container.format.name
        if format_name.endswith("_pipe") or format_name == "image2":
            raise VideoError(
                "not_a_video",
                f"this is a still image ({format_name.removesuffix('_pipe')}), not a video; "
                "provide a video file",
                format=format_name,
            )
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise VideoError(
                "no_video_stream",
                f"the file has no video stream (found: {', '.join(kinds) or 'nothing'}); "
                "provide a video with picture, not an audio-only file",
                streams=kinds,
            )
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else ""
        if stream.codec_context is None or not codec:
            raise VideoError(
                "unsupported_codec",
                "the video codec cannot be decoded here; "
                "re-encode the video to H.264 (e.g. ffmpeg -c:v libx264)",
            )
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start_time = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        if stream.duration is not None and time_base:
            duration = float(stream.duration * time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        if duration > max_duration_s:
            raise VideoError(
                "too_long",
                f"the video lasts {duration:.0f} s, over the {max_duration_s:.0f} s limit; cut it shorter",
                duration_s=duration,
                max_duration_s=max_duration_s,
            )
        keyframes = (
            [e.timestamp * time_base for e in stream.index_entries if e.is_keyframe] if time_base else []
        )
        first = _first_frame(container, stream)
        rotation = int(round(first.rotation)) % 360 if first.rotation else 0
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        frame_count = stream.frames or None
        if not fps and duration and frame_count:
            fps = frame_count / duration
        if not duration and fps and frame_count:
            duration = frame_count / fps
        info = VideoInfo(
            container=format_name,
            codec=codec,
            duration_s=round(duration, 4),
            fps=round(fps, 4),
            width=width,
            height=height,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            frame_count=frame_count,
            size_bytes=size,
        )
    return Probe(path=path, info=info, start_time=start_time, keyframes=keyframes)


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
