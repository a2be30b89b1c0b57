"""Synthetic test videos written with PyAV, so the always-on tests need nothing outside the repository.

Why synthetic: every property a test asserts (where the face is, how many people, rotation metadata,
variable frame rate, audio, the exact kind of corruption) is known by construction. The face is the
astronaut photo that scikit-image ships (Eileen Collins, public domain), pasted onto a plain background
and moved, zoomed or rotated over time.

Main entry points (other packages' tests reuse them):
- :func:`write_face_video` - one face that pans/zooms/rotates; returns the true face box per frame.
- :func:`write_two_faces_video`, :func:`write_no_face_video` - two people; nobody.
- :func:`write_video` - any frames, with rotation metadata, variable frame rate, audio, codec choice.
- :func:`write_audio_only`, :func:`write_zero_frame_video`, :func:`write_truncated_copy`,
  :func:`write_jpeg_named_mp4`, :func:`write_random_bytes`, :func:`write_empty_file` - bad inputs.
- :func:`encode_live_webm` - a WebM byte stream as a MediaRecorder sends it (no duration, no cues).
- :func:`write_y4m` - raw frames as Y4M, the file Chromium's fake camera plays (browser tests).
- :func:`write_tiny_video`, :func:`write_huge_declared_mjpeg`, :func:`write_streamed_mkv` - hostile inputs:
  degenerate frame sizes, a frame size that would take gigabytes to decode, no duration in the header.
- :func:`write_indexed_video` - frames that carry their own number (:func:`read_frame_code`), in any
  container and codec, with long GOPs and B-frames: for checking that a sampled frame is the one at its time.
- :func:`write_two_video_streams`, :func:`write_animated_webp` - a second video stream; an animated image.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data as skdata

# The astronaut's face in skimage.data.astronaut() (512x512), measured with OpenCV's frontal Haar cascade:
# x, y, w, h = 177, 66, 95, 95.
ASTRONAUT_FACE_BOX = np.array([177.0, 66.0, 272.0, 161.0], dtype=np.float32)
# The part of the photo pasted into videos: the head and shoulders around the face, so a detector sees
# natural context but the photo's other content (flag, shuttle) stays out.
_HEAD_CROP = (100, 0, 350, 300)  # x1, y1, x2, y2 in the photo


@dataclass
class SynthVideo:
    """A written video and the ground truth a test needs about it."""

    path: Path
    width: int  # display width (after rotation metadata)
    height: int
    fps: float
    n_frames: int
    # Per frame, per face: true box [x1, y1, x2, y2] in display pixels.
    boxes: list[list[np.ndarray]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def head_image() -> np.ndarray:
    """RGB uint8 head-and-shoulders crop of the astronaut photo (250x300)."""
    x1, y1, x2, y2 = _HEAD_CROP
    return np.ascontiguousarray(skdata.astronaut()[y1:y2, x1:x2])


def _head_face_box() -> np.ndarray:
    x1, y1, _, _ = _HEAD_CROP
    return ASTRONAUT_FACE_BOX - np.array([x1, y1, x1, y1], dtype=np.float32)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, faceless background (colour gradient plus mild noise) so frames are not trivially flat."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([60 + 80 * xx / max(width, 1), 90 + 60 * yy / max(height, 1), 120 + 0 * xx], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 4, size=(height, width, 1))
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def paste_head(
    frame: np.ndarray, centre: tuple[float, float], face_px: float, angle: float = 0.0
) -> np.ndarray:
    """Paste the astronaut head so her face is ``face_px`` wide, centred at ``centre`` (x, y), rotated by
    ``angle`` degrees (counter-clockwise); returns the true face box [x1, y1, x2, y2] in frame pixels."""
    head = head_image()
    face = _head_face_box()
    scale = face_px / float(face[2] - face[0])
    face_cx, face_cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    # Affine map: photo -> frame, rotating about the face centre, so the face lands on `centre`.
    matrix = cv2.getRotationMatrix2D((float(face_cx), float(face_cy)), angle, scale)
    matrix[0, 2] += centre[0] - face_cx
    matrix[1, 2] += centre[1] - face_cy
    h, w = frame.shape[:2]
    warped = cv2.warpAffine(head, matrix, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full(head.shape[:2], 255, np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST)
    frame[mask > 0] = warped[mask > 0]
    half = face_px / 2
    return np.array(
        [centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], dtype=np.float32
    )


def face_frames(
    n_frames: int, width: int = 640, height: int = 360, motion: str = "pan", face_px: float = 110.0
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Frames with one face and its true boxes. ``motion``: ``pan`` (left to right), ``zoom`` (face grows
    from 0.6x to 1.4x ``face_px``), ``rotate`` (in-plane tilt -20..20 degrees) or ``still``."""
    if motion not in ("pan", "zoom", "rotate", "still"):
        raise ValueError(f"unknown motion {motion!r}")
    base = background(width, height)
    frames, boxes = [], []
    for i in range(n_frames):
        u = i / max(n_frames - 1, 1)
        cx, cy, px, angle = width / 2, height / 2, face_px, 0.0
        if motion == "pan":
            cx = width * (0.3 + 0.4 * u)
        elif motion == "zoom":
            px = face_px * (0.6 + 0.8 * u)
        elif motion == "rotate":
            angle = -20 + 40 * u
        frame = base.copy()
        boxes.append([paste_head(frame, (cx, cy), px, angle)])
        frames.append(frame)
    return frames, boxes


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str = "libx264",
    rotation: int = 0,
    times: Sequence[float] | None = None,
    audio: bool = False,
    gop: int | None = None,
    crf: int = 23,
    preset: str = "ultrafast",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode RGB uint8 frames to ``path`` (container from the suffix).

    ``rotation``: display-matrix rotation in degrees counter-clockwise (PyAV/FFmpeg convention, what a
    phone writes); the frames are stored as given, so pass them pre-rotated the other way to get an upright
    display. ``times``: presentation time of each frame in seconds, for variable frame rate. ``audio``: add
    a quiet AAC sine track as long as the video. ``preset``: x264 speed preset (ultrafast: no B-frames).
    ``pix_fmt``: e.g. ``yuv444p`` for frames with an odd side (4:2:0 needs even sides; a 1x1 video).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)  # streamed: a long synthetic video never sits in memory
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video needs at least one frame (use write_zero_frame_video for none)")
    height, width = first.shape[:2]
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height = width, height
    stream.pix_fmt = pix_fmt
    if codec == "libx264":
        stream.options = {"crf": str(crf), "preset": preset}
    if gop:
        stream.codec_context.gop_size = gop
    if rotation:
        stream.set_display_rotation(rotation)
    if times is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
    audio_stream = container.add_stream("aac", rate=44100) if audio else None
    count = 0
    for i, rgb in enumerate(itertools.chain([first], frames)):
        count += 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if times is not None:
            if i >= len(times):
                raise ValueError("times must give one timestamp per frame")
            frame.pts = int(round(times[i] * 1000))
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    if audio_stream is not None:
        duration = (times[-1] + 1 / fps) if times is not None else count / fps
        _encode_sine(container, audio_stream, duration)
    container.close()
    return path


def _encode_sine(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    rate, chunk = 44100, 1024
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        t = (np.arange(start, min(start + chunk, total)) / rate).astype(np.float32)
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_face_video(
    path: Path,
    n_frames: int = 50,
    width: int = 640,
    height: int = 360,
    fps: float = 25.0,
    motion: str = "pan",
    face_px: float = 110.0,
    rotation: int = 0,
    variable_fps: bool = False,
    audio: bool = False,
    gop: int | None = None,
) -> SynthVideo:
    """One face moving as ``motion`` says (see :func:`face_frames`), written to ``path``.

    With ``rotation`` the pixels are stored turned the other way, so a player (and the pipeline) that
    honours the metadata shows the face upright at the returned boxes. With ``variable_fps`` the frame
    interval alternates between 1/fps and 3/fps.
    """
    frames, boxes = face_frames(n_frames, width, height, motion, face_px)
    stored = [_unrotate(f, rotation) for f in frames]
    times = None
    if variable_fps:
        steps = [(1.0 if i % 2 == 0 else 3.0) / fps for i in range(n_frames)]
        times = [0.0] + list(np.cumsum(steps[:-1]))
    write_video(path, stored, fps=fps, rotation=rotation, times=times, audio=audio, gop=gop)
    ts = list(times) if times is not None else [i / fps for i in range(n_frames)]
    return SynthVideo(Path(path), width, height, fps, n_frames, boxes, ts)


def _unrotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Turn an upright frame so that displaying it with ``rotation`` (CCW degrees) makes it upright again."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k=-k)) if k else frame


def write_y4m(path: Path, frames: Sequence[np.ndarray], fps: int = 25) -> Path:
    """RGB frames as an uncompressed YUV4MPEG2 (4:2:0) file: what Chromium's fake camera
    (``--use-file-for-fake-video-capture``) plays, in a loop, at ``fps``. Even width and height."""
    height, width = frames[0].shape[:2]
    with Path(path).open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return Path(path)


def write_two_faces_video(
    path: Path,
    n_frames: int = 40,
    width: int = 854,
    height: int = 480,
    fps: float = 25.0,
    face_px: float = 120.0,
) -> SynthVideo:
    """Two people side by side (the same photo twice, the left one drifting slightly), one box each."""
    base = background(width, height, seed=1)
    frames, boxes = [], []
    for i in range(n_frames):
        frame = base.copy()
        left = paste_head(frame, (width * 0.27 + i * 0.5, height * 0.5), face_px)
        right = paste_head(frame, (width * 0.73, height * 0.45), face_px * 0.9)
        frames.append(frame)
        boxes.append([left, right])
    write_video(path, frames, fps=fps)
    return SynthVideo(Path(path), width, height, fps, n_frames, boxes, [i / fps for i in range(n_frames)])


def write_no_face_video(
    path: Path, n_frames: int = 30, width: int = 640, height: int = 360, fps: float = 25.0
) -> SynthVideo:
    """A moving coloured rectangle on the gradient background: a valid video with nobody in it."""
    base = background(width, height, seed=2)
    frames = []
    for i in range(n_frames):
        frame = base.copy()
        x = 20 + i * 5
        cv2.rectangle(frame, (x, 100), (x + 120, 220), (200, 40, 40), thickness=-1)
        frames.append(frame)
    write_video(path, frames, fps=fps)
    return SynthVideo(
        Path(path), width, height, fps, n_frames, [[] for _ in frames], [i / fps for i in range(n_frames)]
    )


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .mp4 (or any container) holding only an AAC track: a valid file with no video stream."""
    path = Path(path)
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=44100)
    _encode_sine(container, stream, seconds)
    container.close()
    return path


def write_zero_frame_video(path: Path, width: int = 64, height: int = 48) -> Path:
    """A Matroska file whose header declares an H.264 video stream that holds no frames at all."""
    path = Path(path)
    container = av.open(str(path), "w", format="matroska")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def write_truncated_copy(src: Path, dst: Path, keep_fraction: float = 0.5) -> Path:
    """The first ``keep_fraction`` of ``src``'s bytes: an interrupted download or upload."""
    payload = Path(src).read_bytes()
    Path(dst).write_bytes(payload[: int(len(payload) * keep_fraction)])
    return Path(dst)


def write_jpeg_named_mp4(path: Path) -> Path:
    """A JPEG photo saved under a video name (.mp4): FFmpeg opens it as a one-image stream, not a video."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    Path(path).write_bytes(jpeg.tobytes())
    return Path(path)


def write_random_bytes(path: Path, size: int = 64_000, seed: int = 0) -> Path:
    """Noise under a video name."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(size))
    return Path(path)


def write_empty_file(path: Path) -> Path:
    """A zero-byte file."""
    Path(path).write_bytes(b"")
    return Path(path)


def encode_to_bytes(frames: Sequence[np.ndarray], fps: float = 25.0) -> bytes:
    """An in-memory MP4 of ``frames`` (for upload tests that never touch disk)."""
    buffer = io.BytesIO()
    _encode_into(buffer, "mp4", "libx264", frames, fps)
    return buffer.getvalue()


def _encode_into(
    sink: io.IOBase, format_name: str, codec: str, frames: Sequence[np.ndarray], fps: float
) -> None:
    """Encode RGB ``frames`` with ``codec`` (yuv420p; x264 ultrafast) into a ``format_name`` container."""
    container = av.open(sink, "w", format=format_name)
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
    height, width = frames[0].shape[:2]
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast"}
    for rgb in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def write_tiny_video(path: Path, width: int, height: int, n_frames: int = 5) -> Path:
    """A flat grey H.264 video of any frame size, 1x1 included (4:4:4, so odd sides are allowed)."""
    frames = [np.full((height, width, 3), 128, np.uint8)] * n_frames
    return write_video(path, frames, pix_fmt="yuv444p" if width % 2 or height % 2 else "yuv420p")


def write_huge_declared_mjpeg(path: Path, width: int = 16000, height: int = 16000, n_frames: int = 2) -> Path:
    """A few kilobytes of Matroska/MJPEG whose header and JPEG frame headers declare ``width`` x ``height``
    (16000x16000 by default: ~400 MB per decoded frame) while the entropy-coded data is that of a 16x16
    image: a file that costs nothing to send and a lot to decode, made without ever holding the frame."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 100, np.uint8))
    assert ok
    jpeg = bytearray(encoded.tobytes())
    sof = jpeg.find(b"\xff\xc0")  # baseline start-of-frame: length(2) precision(1) height(2) width(2)
    assert sof > 0
    jpeg[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    container = av.open(str(path), "w", format="matroska")
    stream = container.add_stream("mjpeg", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
    for i in range(n_frames):
        packet = av.Packet(bytes(jpeg))
        packet.stream = stream
        packet.pts = packet.dts = i
        packet.time_base = Fraction(1, 25)
        packet.is_keyframe = True
        container.mux(packet)
    container.close()
    return Path(path)


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable sink: what a muxer writing to a socket or a browser's MediaRecorder sees."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def write_streamed_mkv(
    path: Path, n_frames: int = 250, width: int = 64, height: int = 48, fps: float = 25.0, gop: int = 25
) -> Path:
    """A Matroska (WebM-like) file written live to a non-seekable stream: the muxer cannot go back to
    fill in the Duration element or write Cues, so the header states no duration (what a streaming
    recorder produces). Frame ``i`` has the grey level ``i % 200 + 20``, so tests can tell frames apart."""
    pipe = _Pipe()
    container = av.open(pipe, "w", format="matroska")
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "ultrafast"}
    stream.codec_context.gop_size = gop
    for i in range(n_frames):
        rgb = np.full((height, width, 3), i % 200 + 20, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    Path(path).write_bytes(bytes(pipe.data))
    return Path(path)


def encode_live_webm(frames: Sequence[np.ndarray], fps: float = 25.0) -> bytes:
    """RGB frames as WebM (VP8) muxed to a non-seekable sink: the bytes a browser's MediaRecorder sends
    (no duration, no cues), for streaming them chunk by chunk."""
    pipe = _Pipe()
    _encode_into(pipe, "webm", "libvpx", frames, fps)
    return bytes(pipe.data)


# --- frames that carry their number ---------------------------------------------------------------------

CODE_BITS = 10  # frame numbers 0..1023
_CODE_CELL = 16  # px per bit square


def frame_code_image(index: int, width: int = 192, height: int = 128) -> np.ndarray:
    """An RGB frame whose top row of squares spells ``index`` in binary (white 1, black 0, most significant
    first), over a background and a bar that move with ``index`` (so the codec has real motion to code)."""
    frame = background(width, height, seed=3).copy()
    x = int(index * 3) % max(width - 40, 1)
    frame[height // 2 : height // 2 + 30, x : x + 40] = (200, 60, 40)
    for bit in range(CODE_BITS):
        value = 255 if (index >> (CODE_BITS - 1 - bit)) & 1 else 0
        frame[0:_CODE_CELL, bit * _CODE_CELL : (bit + 1) * _CODE_CELL] = value
    return frame


def read_frame_code(rgb: np.ndarray) -> int:
    """The number :func:`frame_code_image` wrote into ``rgb`` (robust to lossy coding)."""
    index = 0
    for bit in range(CODE_BITS):
        cell = rgb[3 : _CODE_CELL - 3, bit * _CODE_CELL + 3 : (bit + 1) * _CODE_CELL - 3]
        index = (index << 1) | int(cell.mean() > 127)
    return index


def write_indexed_video(
    path: Path,
    n_frames: int = 500,
    fps: float = 25.0,
    codec: str = "libx264",
    gop: int = 250,
    b_frames: bool = True,
    tick_rate: int | None = None,
    width: int = 192,
    height: int = 128,
    format: str | None = None,
) -> Path:
    """Frames numbered 0..n-1 (:func:`frame_code_image`) in the container the suffix (or ``format``) names.

    ``gop``: keyframe interval (250 is x264's default: 10 s at 25 fps, so seeks land between keyframes).
    ``b_frames``: x264 preset ``fast`` (B-frames, reordering) instead of ``ultrafast``; for mpeg4 and
    mpeg2video two B-frames. ``tick_rate``: stream ticks per second, e.g. 50 for a 25 fps AVI written in
    1/50 s ticks (what an FFmpeg remux of H.264 often gives): its header rate then counts empty chunks.
    A ``.h264`` path gives a raw Annex B stream: no container, no timestamps."""
    path = Path(path)
    container = av.open(str(path), "w", format=format)
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    stream.codec_context.gop_size = gop
    if codec == "libx264":
        stream.options = {"preset": "fast" if b_frames else "ultrafast", "crf": "20"}
    elif codec in ("mpeg4", "mpeg2video"):
        stream.codec_context.bit_rate = 2_000_000
        if b_frames:
            stream.codec_context.max_b_frames = 2
    if tick_rate:
        stream.codec_context.time_base = Fraction(1, tick_rate)
        stream.time_base = Fraction(1, tick_rate)
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(frame_code_image(i, width, height), format="rgb24")
        if tick_rate:
            frame.pts = int(round(i * tick_rate / fps))
            frame.time_base = Fraction(1, tick_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_two_video_streams(path: Path, n_frames: int = 50, fps: float = 25.0) -> Path:
    """A Matroska file with two video streams: the numbered frames, and a smaller grey second picture."""
    path = Path(path)
    container = av.open(str(path), "w", format="matroska")
    streams = []
    for width, height in ((192, 128), (96, 64)):
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        streams.append(stream)
    for i in range(n_frames):
        images = (frame_code_image(i), np.full((64, 96, 3), 90, np.uint8))
        for stream, rgb in zip(streams, images, strict=True):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
    for stream in streams:
        for packet in stream.encode():
            container.mux(packet)
    container.close()
    return path


def write_animated_webp(path: Path, n_frames: int = 10) -> Path:
    """An animated WebP (Pillow writes it; FFmpeg's webp demuxer sees an image pipe)."""
    from PIL import Image

    frames = [Image.fromarray(frame_code_image(i)) for i in range(n_frames)]
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return Path(path)
