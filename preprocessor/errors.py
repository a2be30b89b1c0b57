"""Why a video cannot be analysed, as a stable code, a message that says what to fix, and an HTTP status.

One exception type for every input problem keeps the CLI (FileError lines), the preprocessor service and
the gateway (ErrorBody JSON) in agreement: they all print ``to_error_detail()``. Its status comes from the
one code -> status table (deepfake.contracts.errors.ERROR_CATALOGUE). 415: we cannot read this kind of
file; 413: over a configured limit; 422: the file claims to be a video but its content is broken or empty;
404/400: the input itself.
"""

from __future__ import annotations

from typing import Any

from deepfake.contracts.errors import ServiceError

# The codes a VideoError may carry (each in deepfake.contracts.errors.ERROR_CATALOGUE).
VIDEO_CODES = frozenset(
    {
        "file_not_found",
        "not_a_file",
        "empty_file",
        "not_a_video",
        "no_video_stream",
        "unsupported_codec",
        "animated_image",  # an animated image (WebP) whose frames this FFmpeg cannot decode as video
        "too_large",
        "too_long",
        "too_large_frame",  # frame size over the pixel limit, refused before decoding
        "corrupt_video",
        "zero_frames",
        "frame_too_small",  # a frame too small (or too thin) to hold a face the detector can see
        "source_unavailable",  # a live source (device, URL) that cannot be opened or stopped sending
        "invalid_frame",  # a live stream's frame that is not a decodable JPEG/PNG image
    }
)


class VideoError(ServiceError):
    """An input video the pipeline refuses; ``code`` is one of :data:`VIDEO_CODES`."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        if code not in VIDEO_CODES:
            raise ValueError(f"unknown VideoError code {code!r}")
        super().__init__(code, message, details)


class AudioError(Exception):
    """The audio stream of a video cannot be decoded. Not a VideoError: a video whose audio is broken is
    still analysed (the visual verdict stands, its audio-visual result says ``audio_error``)."""

    reason = "audio_error"
