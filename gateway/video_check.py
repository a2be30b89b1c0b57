"""A quick look inside an upload before it is queued or forwarded: can it be opened, how long is it.

WHY in the gateway: a 2-hour film or a truncated file should be refused at once with a message, not after
it waited in the job queue and crossed the network. Only the container header is read (no decoding),
so this costs milliseconds; the preprocessor still probes fully (same limits) before analysing.

A file written live (streamed MKV/WebM, e.g. a browser's MediaRecorder) states no duration in its header.
Then the packets are scanned (preprocessor.probe.scan_packets: demuxed, never decoded), stopping with
``too_long`` as soon as the span passes the limit, so the synchronous endpoint's shorter limit holds for
such files too (the preprocessor only knows the job limit).

Refusals are ServiceErrors (deepfake.contracts.errors): UploadError for a file that cannot be read, and the
pipeline's own ``too_long`` (preprocessor.probe.too_long, a VideoError) with the gateway's advice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av

from deepfake.containers import header_duration_s
from deepfake.uploads import UploadError
from preprocessor.errors import VideoError
from preprocessor.probe import scan_packets, too_long


def video_duration_s(path: Path) -> float | None:
    """Duration the header states (None: it states none); raises UploadError when the file has no
    readable video."""
    try:
        with av.open(str(path), "r", metadata_errors="replace") as container:
            streams = container.streams.video
            if not streams:
                raise UploadError(
                    "no_video_stream", "the file has no video stream (audio only?); upload a video"
                )
            return header_duration_s(container, streams[0])
    except av.error.EOFError as exc:
        raise UploadError(
            "zero_frames", "the file ends right after its header: it holds no video frames"
        ) from exc
    except av.error.FFmpegError as exc:
        # The reason without the file name: the client must never see server paths.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UploadError(
            "corrupt_video",
            "the file looks like a video container but cannot be read (truncated or damaged?); "
            "upload the complete file",
            reason=reason,
        ) from exc


def check_duration(path: Path, max_duration_s: float, hint: str = "") -> float | None:
    """The duration in seconds (from the header, else measured from the packets; None when neither
    says); raises ``too_long`` over ``max_duration_s``. Blocking I/O: call it from a thread."""
    duration = video_duration_s(path)
    if duration is None:
        duration = measured_duration_s(path, max_duration_s, hint)
    if duration is not None and duration > max_duration_s:
        raise too_long(duration, max_duration_s, hint=hint)
    return duration


def measured_duration_s(path: Path, max_duration_s: float, hint: str = "") -> float | None:
    """The video stream's span from its packets' timestamps (read, not decoded), for files whose header
    states no duration; the scan stops at the limit with ``too_long``. None when no packet has a time."""
    try:
        scan = scan_packets(path, max_duration_s)
    except VideoError as exc:
        if exc.code == "too_long":
            measured = float(exc.details.get("duration_s", max_duration_s))
            raise too_long(measured, max_duration_s, True, hint, duration_from="packets") from exc
        # FFmpeg's reason names the file: the client must never see server paths.
        details = {k: v for k, v in exc.details.items() if k not in ("reason", "path")}
        raise UploadError(exc.code, exc.message, **details) from exc
    return scan.duration_s if scan.duration_s > 0 else None


def early_duration_check(max_duration_s: float, hint: str = "") -> Callable[[Path, int], None]:
    """An early check for deepfake.uploads: refuse an over-long video from its first megabyte when the
    container's index is there; any other outcome (index at the end, partial data) waits for the full
    file."""

    def check(path: Path, received_bytes: int) -> None:
        try:
            with av.open(str(path), "r", metadata_errors="replace") as container:
                streams = container.streams.video
                duration = header_duration_s(container, streams[0]) if streams else None
        except Exception:  # partial data: most files cannot be judged yet
            return
        if duration is not None and duration > max_duration_s:
            raise too_long(duration, max_duration_s, hint=hint, refused_after_bytes=received_bytes)

    return check
