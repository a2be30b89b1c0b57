"""Take one video upload off the wire for the gateway: stream to disk, check type, size and duration.

WHY one helper: both POST /v1/detections and POST /v1/jobs must refuse bad uploads identically, and
must delete the file on every refusal. A body that stalls (no bytes for ``upload_read_timeout_s``) ends
with 408 and its partial file deleted; a client that disconnects mid-upload is logged in one line
(deepfake.uploads).
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from deepfake.uploads import Upload, receive_upload, remove_quietly
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.video_check import check_duration, early_duration_check


async def receive_video(
    request: Request,
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    max_duration_s: float,
    hint: str = "",
) -> Upload:
    upload = await receive_upload(
        request.headers.get("content-type"),
        request.stream(),
        settings.upload_dir,
        settings.max_upload_bytes,
        early_duration_check(max_duration_s, hint),
        read_timeout_s=settings.upload_read_timeout_s,
    )
    try:
        # In a thread: a file without a duration in its header is measured by reading its packets.
        await asyncio.to_thread(check_duration, upload.path, max_duration_s, hint)
    except BaseException:
        remove_quietly(upload.path)
        raise
    metrics.upload_bytes.inc(upload.size)
    metrics.upload_size.observe(upload.size)
    return upload
