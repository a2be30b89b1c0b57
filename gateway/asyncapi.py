"""An AsyncAPI 2.6 description of WebSocket /v1/streams, built from the message models themselves.

Why generated: OpenAPI describes no WebSocket messages, and a hand-written description would drift from
deepfake/contracts/schemas.py; here every payload schema is the pydantic model's own JSON schema, so a field
added to StreamResult appears in the description at once. Served at GET /v1/streams/asyncapi.json.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from deepfake.contracts.schemas import StreamControl, StreamError, StreamResult, StreamSummary

REF = "#/components/schemas/{model}"


def stream_asyncapi() -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "serialization") for m in (StreamControl, StreamResult, StreamSummary, StreamError)],
        ref_template=REF,
    )
    schemas = top["$defs"]

    def message(name: str, summary: str, payload: dict[str, Any], content_type: str) -> dict[str, Any]:
        return {"name": name, "summary": summary, "contentType": content_type, "payload": payload}

    def ref(model: type) -> dict[str, str]:
        return {"$ref": REF.format(model=model.__name__)}

    binary = {"type": "string", "format": "binary"}
    messages = {
        "frame": message(
            "frame",
            "One video frame: a JPEG or PNG image (binary message). Frames carry no audio: with them every "
            "face's audio_visual says no_audio.",
            binary,
            "image/jpeg",
        ),
        "byteStreamChunk": message(
            "byteStreamChunk",
            "The next chunk of one WebM/MP4 byte stream (a MediaRecorder's output); the first binary "
            "message of the stream starts the container. Its audio track, if any, is decoded with the "
            "frames for the audio-visual signal (tracks[].audio_visual, when the service has a sync model).",
            binary,
            "video/webm",
        ),
        "control": message(
            "control",
            '{"t": seconds}: the stream time of the next frame; {"type": "end"}: finish (summary, 1000).',
            ref(StreamControl),
            "application/json",
        ),
        "result": message(
            "result",
            "One rolling result per scored window; per face the latest audio-visual score of its last "
            "few windows (audio_visual).",
            ref(StreamResult),
            "application/json",
        ),
        "final": message(
            "final",
            "The last message: per face the mean over all its windows (visual and audio-visual).",
            ref(StreamSummary),
            "application/json",
        ),
        "error": message(
            "error",
            "Sent right before a refusal's close code: 4000 + the HTTP status of the same refusal.",
            ref(StreamError),
            "application/json",
        ),
    }

    def refs(*names: str) -> dict[str, Any]:
        return {"oneOf": [{"$ref": f"#/components/messages/{n}"} for n in names]}

    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Deepfake detector live streams",
            "version": "1",
            "description": "Scores for a live video while it plays. See README, Live streams.",
        },
        "channels": {
            "/v1/streams": {
                "description": "WebSocket. Close codes: 1000 after the summary; 4401 no/invalid key; 4429 "
                "too many streams for the key or rate limited; 4413 frame too large; 4415 not a JPEG/PNG or "
                "a byte stream that is no video; 4422 frame too small; 4400 bad text message; 4408 idle "
                "timeout; 4503 analysis unavailable; 1011 internal error.",
                "bindings": {
                    "ws": {
                        "headers": {"type": "object", "properties": {"X-API-Key": {"type": "string"}}},
                        "query": {"type": "object", "properties": {"api_key": {"type": "string"}}},
                    }
                },
                "publish": {
                    "summary": "client to server",
                    "message": refs("frame", "byteStreamChunk", "control"),
                },
                "subscribe": {"summary": "server to client", "message": refs("result", "final", "error")},
            }
        },
        "components": {"messages": messages, "schemas": schemas},
    }
