"""WebSocket /v1/streams: live frames in, one JSON result per scored window out (public side).

Why a relay: the gateway holds no model and no detector; it authenticates the caller, enforces the
public limits and passes each message on to the preprocessor's internal /v1/streams (which runs the
stream session on Triton), and every message and close code back.

Protocol (also in README "Live streams" and the OpenAPI description):
- connect with the API key in ``X-API-Key`` or, from a browser (which cannot set WebSocket headers), the
  query parameter ``api_key``;
- send each frame as one binary message holding a JPEG or PNG image; a text message ``{"t": 1.28}`` before
  it gives its stream time in seconds (else its arrival at the gateway since the first frame); or send a
  WebM/MP4 byte stream (a browser's MediaRecorder chunks) as consecutive binary messages, the first one
  starting the container; send ``{"type": "end"}`` to get the final summary, then the close code 1000;
- receive StreamResult messages (``type: result``), the StreamSummary (``type: final``), and before any
  refusal a StreamError (``type: error``) then the close code 4000 + the HTTP status of the same refusal:
  4401 no or invalid key, 4429 too many streams for this key (``stream_max_per_key``) or rate limited,
  4413 a frame over ``stream_max_frame_bytes`` or ``stream_max_frame_pixels``, 4415 bytes that are not a
  JPEG/PNG image, 4422 a frame too small, 4400 a text message that is not a control message, 4408 nothing
  received for ``stream_idle_timeout_s``, 4503 the analysis service unavailable or busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from deepfake.api_errors import ApiError, close_websocket
from deepfake.contracts.errors import ServiceError
from deepfake.contracts.schemas import StreamControl
from gateway.asyncapi import stream_asyncapi
from gateway.auth import Auth
from gateway.dependencies import Metrics, OpenStreams, Settings
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from preprocessor.errors import VideoError
from preprocessor.images import check_image, is_container_start

log = logging.getLogger(__name__)
router = APIRouter(tags=["streams"])
UNAVAILABLE = ApiError("preprocessor_unavailable", "the analysis service is unavailable; retry later")


@router.get(
    "/v1/streams/asyncapi.json",
    summary="AsyncAPI description of the WebSocket /v1/streams",
    description="The messages of the live-stream WebSocket (which OpenAPI cannot describe) as AsyncAPI 2.6, "
    "their payloads the same models the server sends.",
)
def asyncapi() -> dict:
    return stream_asyncapi()


async def refuse(ws: WebSocket, error: ServiceError, metrics: GatewayMetrics) -> None:
    """Close with the refusal's message and code, counted by its code."""
    metrics.stream_ends.labels(error.code).inc()
    await close_websocket(ws, error)


def upstream_url(settings: GatewaySettings) -> str:
    base = settings.preprocessor_url.rstrip("/")
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/streams"


@router.websocket("/v1/streams")
async def stream(
    ws: WebSocket, settings: Settings, metrics: Metrics, open_streams: OpenStreams, auth: Auth
) -> None:
    await ws.accept()
    try:
        owner = auth.authenticate(ws, ws.headers.get("x-api-key") or ws.query_params.get("api_key"))
    except ApiError as exc:
        await refuse(ws, exc, metrics)
        return
    if open_streams.get(owner, 0) >= settings.stream_max_per_key:
        await refuse(
            ws,
            ApiError(
                "too_many_streams",
                f"this API key already has {settings.stream_max_per_key} live stream(s) open; close one",
            ),
            metrics,
        )
        return
    open_streams[owner] = open_streams.get(owner, 0) + 1
    metrics.streams_open.inc()
    try:
        token = settings.service_token.get_secret_value()
        try:
            upstream = await connect(
                upstream_url(settings),
                additional_headers={"Authorization": f"Bearer {token}"} if token else None,
                open_timeout=10,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.warning("stream: preprocessor unreachable: %s", exc)
            await refuse(ws, UNAVAILABLE, metrics)
            return
        async with upstream:
            await relay(ws, upstream, settings, metrics)
    finally:
        metrics.streams_open.dec()
        open_streams[owner] -= 1
        if not open_streams[owner]:
            del open_streams[owner]


async def relay(
    ws: WebSocket, upstream: ClientConnection, settings: GatewaySettings, metrics: GatewayMetrics
) -> None:
    """Client -> preprocessor with the public checks, preprocessor -> client as it comes, until either
    side closes; leaving closes the upstream (the preprocessor then ends its session)."""
    down = asyncio.create_task(_downstream(upstream, ws, metrics))
    first_arrival: float | None = None
    timed = False  # the client gave the next frame's time
    byte_stream = False
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait(
                {receive, down}, timeout=settings.stream_idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receive
                if down not in done:
                    await refuse(
                        ws,
                        ApiError(
                            "idle_timeout",
                            f"nothing received for {settings.stream_idle_timeout_s:g} s: stream closed",
                        ),
                        metrics,
                    )
                return
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                metrics.stream_ends.labels("disconnected").inc()
                return
            if message.get("text") is not None:
                try:
                    control = StreamControl.model_validate(json.loads(message["text"]))
                except (ValueError, ValidationError):
                    await refuse(
                        ws,
                        ApiError(
                            "bad_message",
                            'text messages are {"t": <seconds>} (the next frame\'s time) or {"type": "end"}',
                        ),
                        metrics,
                    )
                    return
                timed = control.type == "time" and control.t is not None
                await upstream.send(control.model_dump_json(exclude_none=True))
                continue
            data = message.get("bytes") or b""
            if first_arrival is None and not byte_stream and is_container_start(data):
                byte_stream = True  # a WebM/MP4 byte stream: every binary message is its next chunk
            problem = frame_problem(data, settings, image=not byte_stream)
            if problem is not None:
                await refuse(ws, problem, metrics)
                return
            now = time.perf_counter()
            first_arrival = now if first_arrival is None else first_arrival
            if (
                not timed and not byte_stream
            ):  # the arrival time here, so the preprocessor's times are the client's pace
                await upstream.send(StreamControl(t=round(now - first_arrival, 4)).model_dump_json())
            timed = False
            await upstream.send(data)
    except ConnectionClosed:
        await down  # the preprocessor went away: _downstream tells the client why
    finally:
        if not down.done():
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down


def frame_problem(data: bytes, settings: GatewaySettings, image: bool = True) -> ApiError | None:
    """Why a binary message is refused: its size; for a frame (``image``) also not being a JPEG/PNG or its
    pixel size, from the header only (a byte stream's chunks are checked by the preprocessor's decoder)."""
    if len(data) > settings.stream_max_frame_bytes:
        return ApiError(
            "too_large",
            f"a message of {len(data)} bytes is over the {settings.stream_max_frame_bytes} byte limit",
        )
    if not image:
        return None
    try:
        check_image(data, settings.stream_max_frame_pixels, settings.stream_min_frame_side)
    except VideoError as exc:
        return ApiError(exc.code, exc.message, exc.details)
    return None


async def _downstream(upstream: ClientConnection, ws: WebSocket, metrics: GatewayMetrics) -> None:
    """Every preprocessor message to the client, then its close code (1000 after the summary; an upstream
    that dropped without one is the service being unavailable)."""
    try:
        async for message in upstream:
            await ws.send_text(message if isinstance(message, str) else message.decode())
    except ConnectionClosed:
        pass
    received = upstream.close_code
    if received is None or received == 1006:
        await refuse(ws, UNAVAILABLE, metrics)
        return
    reason = "completed" if received == 1000 else (upstream.close_reason or str(received))
    metrics.stream_ends.labels(reason).inc()
    with contextlib.suppress(Exception):
        await ws.close(received, upstream.close_reason or "")
