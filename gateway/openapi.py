"""The gateway's OpenAPI document: FastAPI's, completed for frontend developers.

WHY a module: FastAPI generates paths and schemas from the code, but a client author also needs what it
cannot know: an example of every answer, the error shape its handlers really return for 422 (it documents
its own ``{"detail": [...]}``, which ``deepfake.api_errors`` replaces), error bodies under
``application/json`` even on HTML/JPEG endpoints, the callback (``webhooks``) and a ``servers`` entry that
points at the gateway (a Postman import of a spec without one gets a base URL of ``/``). Everything it adds
is done once here, after generation, so routers only declare what they do.

    python -m gateway.openapi > openapi.json     # the document as `make postman` converts it
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header

from deepfake.api_errors import error_responses_doc
from deepfake.contracts.schemas import (
    AudioVisualScore,
    DetectionResult,
    JobCreated,
    JobStatus,
    ModelInfo,
    Signals,
    TimelinePoint,
    Track,
    TrackEvidence,
    TrackFrame,
    VideoInfo,
)

EXAMPLE_BASE = "https://detector.example"
EXAMPLE_JOB = "3f2a9c0d5e6b4a71b8c9d0e1f2a3b4c5"
SIGNATURE_HELP = (
    "`t=<unix seconds>,v1=<hex>`: HMAC-SHA256, keyed with your callback secret, of `<t>.` followed by the "
    "raw body. Verify it on the raw bytes and refuse old `t` (replays); see README *Callbacks*."
)


def _example_result(evidence: bool) -> dict[str, Any]:
    """An illustrative DetectionResult (made-up values, one face), validated by building the model."""
    job = f"{EXAMPLE_BASE}/v1/jobs/{EXAMPLE_JOB}/evidence"
    frames = [
        TrackFrame(frame_index=0, t=0.0, box=[412.0, 96.0, 598.0, 282.0], detection_score=0.97, score=0.81),
        TrackFrame(frame_index=2, t=0.08, box=[414.5, 97.0, 600.0, 283.5], detection_score=0.96, score=0.84),
    ]
    track = Track(
        id=0,
        verdict="fake",
        score=0.83,
        threshold=0.5,
        clip_scores=[0.74],
        start_s=0.0,
        end_s=0.08,
        mean_face_px=186.0,
        used_for_verdict=True,
        frames=frames,
        audio_visual=AudioVisualScore(score=0.78, offset_s=0.44, windows_scored=4, reason="scored"),
        signals=Signals(visual=0.74, audio_visual=0.78),
        evidence=TrackEvidence(
            frame_t=0.08,
            frame_score=0.84,
            thumbnail=f"{job}/track-0-thumbnail.jpg",
            heatmap=f"{job}/track-0-heatmap.jpg",
            strip=f"{job}/track-0-strip.jpg",
            strip_times=[0.0, 0.08],
        )
        if evidence
        else None,
    )
    result = DetectionResult(
        path="interview.mp4",
        verdict="fake",
        score=0.83,
        threshold=0.5,
        signals=Signals(visual=0.74, audio_visual=0.78),
        tracks=[track],
        timeline=[TimelinePoint(t=0.0, score=0.81), TimelinePoint(t=0.08, score=0.84)],
        video=VideoInfo(
            container="mov,mp4,m4a,3gp,3g2,mj2",
            codec="h264",
            duration_s=12.4,
            fps=25.0,
            width=1280,
            height=720,
            has_audio=True,
            frame_count=310,
            frames_sampled=2,
            size_bytes=4_812_345,
            sha256="9b74c9897bac770ffc029102a200c5de" * 2,
        ),
        model=ModelInfo(
            name="deepfake_detector",
            version="2.0.0",
            sha256="5e884898da28047151d0e56f8dc62927" * 2,
            backend="triton",
            reals_called_fake=0.435,
            fakes_caught=0.72,
        ),
        sync_model=ModelInfo(
            name="av_sync", version="1.0.0", sha256="2c26b46b68ffc68ff99b453c1d304134" * 2, backend="triton"
        ),
        timings_ms={
            "probe": 12.1,
            "decode": 310.4,
            "detect": 140.2,
            "infer": 95.0,
            "audio": 41.0,
            "audio_visual": 38.5,
            "total": 681.8,
        },
        warnings=[],
        analyzed_at=datetime(2026, 1, 5, 9, 30, 12, tzinfo=UTC),
    )
    return result.model_dump(mode="json")


def _example_status(state: str) -> dict[str, Any]:
    url = f"{EXAMPLE_BASE}/v1/jobs/{EXAMPLE_JOB}"
    status = JobStatus(
        id=EXAMPLE_JOB,
        state=state,  # type: ignore[arg-type]
        progress=1.0 if state == "succeeded" else 0.4,
        filename="interview.mp4",
        created_at=datetime(2026, 1, 5, 9, 30, 2, tzinfo=UTC),
        updated_at=datetime(2026, 1, 5, 9, 30, 12, tzinfo=UTC),
        attempts=1,
        result_url=f"{url}/result" if state == "succeeded" else None,
    )
    return status.model_dump(mode="json")


def _examples() -> dict[tuple[str, str, str], tuple[str, Any]]:
    """(path, method, status) -> (media type, example) for every success answer with a body."""
    url = f"{EXAMPLE_BASE}/v1/jobs/{EXAMPLE_JOB}"
    created = JobCreated(id=EXAMPLE_JOB, state="queued", status_url=url, result_url=f"{url}/result")
    json_type = "application/json"
    return {
        ("/healthz", "get", "200"): (json_type, {"status": "ok"}),
        ("/readyz", "get", "200"): (json_type, {"status": "ready"}),
        ("/metrics", "get", "200"): ("text/plain", "# HELP gateway_requests_total Requests\n..."),
        ("/v1/detections", "post", "200"): (json_type, _example_result(evidence=False)),
        ("/v1/jobs", "post", "202"): (json_type, created.model_dump(mode="json")),
        ("/v1/jobs", "get", "200"): (json_type, [_example_status("running"), _example_status("succeeded")]),
        ("/v1/jobs/{job_id}", "get", "200"): (json_type, _example_status("succeeded")),
        ("/v1/jobs/{job_id}/result", "get", "200"): (json_type, _example_result(evidence=True)),
        ("/v1/streams/asyncapi.json", "get", "200"): (
            json_type,
            {
                "asyncapi": "2.6.0",
                "info": {"title": "Deepfake detector live streams"},
                "channels": {"/v1/streams": {}},
            },
        ),
        ("/v1/jobs/{job_id}/report", "get", "200"): (
            "text/html",
            "<!doctype html><html lang=en><head><title>Deepfake analysis report: interview.mp4</title>...",
        ),
    }


def add_webhooks(app: FastAPI) -> None:
    """Document the completion callback as an OpenAPI webhook (nothing is served by it)."""

    @app.webhooks.post(
        "job-finished",
        summary="A job finished (succeeded or failed)",
        description="POSTed to the job's `callback_url` once, with retries on 5xx or no answer. The body is "
        "the job's final status, as `GET /v1/jobs/{id}` returns it. Answer 2xx to acknowledge.",
        status_code=204,
        operation_id="job_finished",
        response_description="Received (any 2xx counts as delivered; 5xx or no answer is retried).",
    )
    def job_finished(
        status: JobStatus,
        x_deepfake_signature: Annotated[str, Header(description=SIGNATURE_HELP)],
    ) -> None:
        """Callback documentation only."""


def _error_response(code: str) -> dict[str, Any]:
    """One documented error answer in OpenAPI form (what FastAPI makes of error_responses_doc)."""
    entry = next(iter(error_responses_doc(code).values()))
    content = entry["content"]["application/json"]
    content["schema"] = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": entry["description"], "content": {"application/json": content}}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Fix and complete FastAPI's document in place (see the module docstring); returns it."""
    examples = _examples()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.get("responses", {})
            # FastAPI's own 422 ({"detail": [...]}) is never sent: our handler answers ErrorBody. String path
            # parameters cannot fail validation, so where there is nothing else to validate, no 422 at all.
            default_422 = responses.get("422")
            if default_422 and "HTTPValidationError" in json.dumps(default_422):
                if any(p.get("in") == "query" for p in operation.get("parameters", [])):
                    responses["422"] = _error_response("invalid_request")
                else:
                    del responses["422"]
            for status, response in responses.items():
                content = response.get("content", {})
                if status[0] in "45":  # errors are JSON even where the success answer is HTML or JPEG
                    for media in [m for m in content if m != "application/json"]:
                        content.setdefault("application/json", {}).update(content.pop(media))
                if (path, method, status) in examples:
                    media, example = examples[(path, method, status)]
                    content.setdefault(media, {}).setdefault("schema", {"type": "string"})
                    content[media]["example"] = example
                    response["content"] = content
    for operations in schema.get("webhooks", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)  # the receiver's answer is its own business
            body = operation["requestBody"]["content"]["application/json"]
            body["example"] = _example_status("succeeded")
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in json.dumps([schema.get("paths", {}), schema.get("webhooks", {})]):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (generated once, then cached)."""
    add_webhooks(app)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def for_server(app: FastAPI, base_url: str) -> dict[str, Any]:
    """The document with ``servers`` naming this gateway (its public URL, or the one it was reached on)."""
    schema = copy.deepcopy(app.openapi())
    schema["servers"] = [{"url": base_url.rstrip("/"), "description": "this gateway"}]
    return schema


LOCAL_SERVER = "http://127.0.0.1:8080"


def offline_document(base_url: str = LOCAL_SERVER) -> dict[str, Any]:
    """The document of a gateway built with default settings (nothing started, nothing kept): what
    `make postman` converts and tests/test_openapi.py compares with the committed copy."""
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = GatewaySettings(
            job_store_url="sqlite:///:memory:", upload_dir=Path(tmp) / "u", evidence_dir=Path(tmp) / "e"
        )
        return for_server(create_app(settings), base_url)


if __name__ == "__main__":
    json.dump(offline_document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
