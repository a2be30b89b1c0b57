"""Why a video cannot be analysed, as a stable code, a message that says what to fix, and an HTTP status.

One exception type for every input problem keeps the CLI (FileError lines), the preprocessor service and
the gateway (ErrorBody JSON) in agreement: they all print ``to_error_detail()``.
"""

from __future__ import annotations

from typing import Any

from deepfake.schemas import ErrorDetail

# code -> HTTP status. 415: we cannot read this kind of file; 413: over a configured limit;
# 422: the file claims to be a video but its content is broken or empty; 404/400: the input itself.
HTTP_STATUS: dict[str, int] = {
    "file_not_found": 404,
    "not_a_file": 400,
    "empty_file": 400,
    "not_a_video": 415,
    "no_video_stream": 415,
    "unsupported_codec": 415,
    "animated_image": 415,  # an animated image (WebP) whose frames this FFmpeg cannot decode as video
    "too_large": 413,
    "too_long": 413,
    "too_large_frame": 413,  # frame size over the pixel limit, refused before decoding
    "corrupt_video": 422,
    "zero_frames": 422,
    "frame_too_small": 422,  # a frame too small (or too thin) to hold a face the detector can see
    "source_unavailable": 400,  # a live source (device, URL) that cannot be opened or stopped sending
    "invalid_frame": 415,  # a live stream's frame that is not a decodable JPEG/PNG image
}


class VideoError(Exception):
    """An input video the pipeline refuses; ``code`` is one of :data:`HTTP_STATUS`'s keys."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown VideoError code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.http_status = HTTP_STATUS[code]

    def to_error_detail(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, message=self.message, details=self.details)

    def __repr__(self) -> str:
        return f"VideoError({self.code!r}, {self.message!r})"


class AudioError(Exception):
    """The audio stream of a video cannot be decoded. Not a VideoError: a video whose audio is broken is
    still analysed (the visual verdict stands, its audio-visual result says ``audio_error``)."""

    reason = "audio_error"
