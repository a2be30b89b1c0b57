"""Still frames of a live stream (JPEG, PNG): what they are and how large, from their header, then pixels.

Why read the header first: a few hundred bytes of PNG or JPEG can declare a frame of gigapixels, which a
decoder would allocate before failing. The gateway refuses such frames (and bytes that are no image at
all) from the header alone, without decoding; the preprocessor checks again and decodes only the frames
its stream session analyses.
"""

from __future__ import annotations

import struct

import numpy as np

from preprocessor.errors import VideoError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def is_container_start(data: bytes) -> bool:
    """Whether ``data`` begins a WebM/Matroska (EBML) or MP4 (``ftyp``) byte stream, e.g. a browser's
    MediaRecorder output, rather than a still image."""
    return data.startswith(b"\x1a\x45\xdf\xa3") or data[4:8] == b"ftyp"


def image_size(data: bytes) -> tuple[str, int, int]:
    """(``jpeg`` | ``png``, width, height) from the header; VideoError ``invalid_frame`` otherwise."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(JPEG_SIGNATURE):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _STANDALONE:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _SOF and i + 9 <= len(data):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return "jpeg", width, height
            i += 2 + length
    raise VideoError(
        "invalid_frame", "a frame must be one JPEG or PNG image (binary message); this is neither"
    )


def check_image(data: bytes, max_frame_pixels: int, min_frame_side: int) -> tuple[str, int, int]:
    """:func:`image_size`, refusing frames over the pixel limit (``too_large_frame``) or with a side under
    ``min_frame_side`` (``frame_too_small``), the limits a video's frames have."""
    kind, width, height = image_size(data)
    if width * height > max_frame_pixels:
        raise VideoError(
            "too_large_frame",
            f"a {width}x{height} frame is over the {max_frame_pixels / 1e6:.1f} MP limit; send smaller ones",
            width=width,
            height=height,
            max_frame_pixels=max_frame_pixels,
        )
    if min(width, height) < min_frame_side:
        raise VideoError(
            "frame_too_small",
            f"a {width}x{height} frame is too small to hold a face (shorter side under {min_frame_side} px)",
            width=width,
            height=height,
        )
    return kind, width, height


def decode_image(data: bytes, max_frame_pixels: int, min_frame_side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a JPEG/PNG frame after :func:`check_image`; ``invalid_frame`` when the bytes
    after a valid header do not decode."""
    import cv2

    check_image(data, max_frame_pixels, min_frame_side)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError("invalid_frame", "a frame has a JPEG/PNG header but its image data does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
