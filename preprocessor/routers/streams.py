"""WebSocket /v1/streams (internal; the gateway relays its public /v1/streams here): live frames in,
rolling results out, one StreamSession (preprocessor/stream.py) per connection on the service's backend.

Messages in: binary = one JPEG/PNG frame, or, when the first binary message starts a WebM/MP4 container
(a browser's MediaRecorder), consecutive chunks of one byte stream decoded incrementally with PyAV; text
``{"t": s}`` = the stream time of the next frame (else its arrival since the first frame); text
``{"type": "end"}`` = send the StreamSummary and close with 1000. A byte stream's audio, when the
service has a sync model, goes to the session too (the audio-visual signal); JPEG/PNG frames carry none.
Messages out: one StreamResult per result; a StreamError right before a refusal's close code
(deepfake.contracts.schemas.stream_close_code: 4415 invalid_frame, 4413 too_large_frame, 4400 bad message,
4503 busy or inference unavailable). Only frames the session analyses are decoded, on a worker thread.
A client that goes away closes the session: its thread ends and nothing of it is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from deepfake.api_errors import ApiError, close_websocket
from deepfake.contracts.errors import ServiceError
from deepfake.contracts.schemas import StreamControl, StreamSummary
from preprocessor.dependencies import Service, Settings
from preprocessor.images import decode_image, is_container_start
from preprocessor.live_source import ChunkPipe, LiveSource
from preprocessor.routers.analyze import as_api_error
from preprocessor.service_settings import ServiceSettings
from preprocessor.stream import StreamClosedError, StreamSession

log = logging.getLogger(__name__)
router = APIRouter(tags=["streams"])


def as_stream_error(exc: BaseException) -> ServiceError:
    known = as_api_error(exc) if isinstance(exc, Exception) else None
    if known is not None:
        return known
    log.error("stream analysis failed", exc_info=exc)
    return ApiError("internal_error", "the stream analysis failed; it was logged")


@router.websocket("/v1/streams")
async def stream(ws: WebSocket, service: Service, settings: Settings) -> None:
    await ws.accept()
    if service.streams >= settings.max_streams:
        await close_websocket(
            ws, ApiError("busy", f"this service analyses {settings.max_streams} streams at once")
        )
        return
    service.streams += 1
    session: StreamSession | None = None
    sender: asyncio.Task | None = None
    try:
        try:
            pipeline = await asyncio.to_thread(service.stream_pipeline)
        except Exception as exc:
            await close_websocket(ws, as_stream_error(exc))
            return
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue = asyncio.Queue()
        session = StreamSession(
            pipeline,
            on_result=lambda r: loop.call_soon_threadsafe(outbox.put_nowait, r),
            on_error=lambda e: loop.call_soon_threadsafe(outbox.put_nowait, e),
        )
        sender = asyncio.create_task(_send_results(ws, outbox))
        await _receive_frames(ws, session, settings, sender, outbox)
    finally:
        if session is not None:
            await asyncio.to_thread(session.close)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        service.streams -= 1


async def _send_results(ws: WebSocket, outbox: asyncio.Queue) -> None:
    """Results to the client in the order the session emits them; after the summary the stream closes
    normally, after a session failure with its code."""
    while True:
        item = await outbox.get()
        if isinstance(item, BaseException):
            await close_websocket(ws, as_stream_error(item))
            return
        await ws.send_text(item.model_dump_json())
        if isinstance(item, StreamSummary):
            await ws.close(1000)
            return


async def _receive_frames(
    ws: WebSocket,
    session: StreamSession,
    settings: ServiceSettings,
    sender: asyncio.Task,
    outbox: asyncio.Queue,
) -> None:
    """Messages -> the session until ``end`` or a disconnect. The first binary message decides the mode:
    a WebM/MP4 start makes every binary message a chunk of one byte stream, decoded on a thread as it
    comes (times from the container); otherwise each is a JPEG/PNG frame."""
    next_t: float | None = None
    first_arrival: float | None = None
    pipe: ChunkPipe | None = None
    decoder: asyncio.Future | None = None
    try:
        while not sender.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                try:
                    control = StreamControl.model_validate(json.loads(message["text"]))
                except (ValueError, ValidationError) as exc:
                    refusal = ApiError("bad_message", f"not a stream control message: {exc}")
                    await close_websocket(ws, refusal)
                    return
                if control.type == "end":
                    if pipe is not None and decoder is not None:
                        pipe.end()
                        if not await _decoded(decoder, outbox):
                            await sender
                            return
                    # The session's last results were queued before finish returned: the summary follows.
                    try:
                        outbox.put_nowait(await asyncio.to_thread(session.finish))
                    except Exception as exc:
                        outbox.put_nowait(exc)
                    await sender
                    return
                next_t = control.t
                continue
            data = message.get("bytes") or b""
            if pipe is None and first_arrival is None and is_container_start(data):
                pipe = ChunkPipe()
                decoder = asyncio.ensure_future(asyncio.to_thread(_decode_bytes, pipe, session, settings))
                decoder.add_done_callback(lambda d: _report(d, outbox))
            if pipe is not None:
                await asyncio.to_thread(pipe.feed, data)
                continue
            arrival = time.perf_counter()
            first_arrival = arrival if first_arrival is None else first_arrival
            t = next_t if next_t is not None else arrival - first_arrival
            next_t = None
            rgb = None
            if session.needs_pixels():
                try:
                    rgb = await asyncio.to_thread(
                        decode_image, data, settings.max_frame_pixels, settings.min_frame_side
                    )
                except Exception as exc:
                    await close_websocket(ws, as_stream_error(exc))
                    return
            try:
                session.push(rgb, t, arrival=arrival)
            except Exception:  # the session failed: the sender reports why and closes
                await sender
                return
    finally:
        if pipe is not None and decoder is not None:
            pipe.end()
            await asyncio.to_thread(session.close)  # a decoder mid-push stops at once
            with contextlib.suppress(Exception):
                await decoder


def _decode_bytes(pipe: ChunkPipe, session: StreamSession, settings: ServiceSettings) -> None:
    """The byte stream's frames into the session as they decode (drops when it is behind)."""
    source = LiveSource(pipe, settings)
    on_audio = session.push_audio if session.wants_audio else None
    try:
        for item in source.frames(on_audio=on_audio, on_audio_error=session.audio_failed):
            session.push(item.rgb() if session.needs_pixels() else None, item.t)
    except StreamClosedError:
        return  # the session ended (client gone, or its own failure, which it reports itself)
    finally:
        source.close()


def _report(decoder: asyncio.Future, outbox: asyncio.Queue) -> None:
    """A byte stream that cannot be decoded ends the stream with its error (e.g. 4415 not_a_video)."""
    if not decoder.cancelled() and decoder.exception() is not None:
        outbox.put_nowait(decoder.exception())


async def _decoded(decoder: asyncio.Future, outbox: asyncio.Queue) -> bool:
    """Wait for the byte stream's decoder; False when it failed (its error is already in the outbox)."""
    with contextlib.suppress(Exception):
        await decoder
    return decoder.exception() is None
