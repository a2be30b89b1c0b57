"""POST /v1/detections: upload a short clip, get the result in the same response."""

from __future__ import annotations

from fastapi import APIRouter, Request

from deepfake.api_errors import ANALYSIS_ERRORS, AUTH_ERRORS, UPLOAD_ERRORS, error_responses_doc
from deepfake.contracts.schemas import DetectionResult
from deepfake.uploads import UPLOAD_OPENAPI, remove_quietly
from gateway.dependencies import Metrics, Owner, Preprocessor, Settings
from gateway.receive import receive_video

router = APIRouter(tags=["detections"])


@router.post(
    "/v1/detections",
    summary="Analyse a short video synchronously",
    description=(
        "Upload a video as multipart/form-data (part `file`); the answer is the detection result. "
        "Clips longer than the synchronous limit must go through `POST /v1/jobs`.\n\n"
        "`curl -H 'X-API-Key: KEY' -F file=@clip.mp4 http://127.0.0.1:8080/v1/detections`"
    ),
    response_model=DetectionResult,
    openapi_extra=UPLOAD_OPENAPI,
    responses=error_responses_doc(*AUTH_ERRORS, *UPLOAD_ERRORS, *ANALYSIS_ERRORS),
)
async def create_detection(
    request: Request, owner: Owner, settings: Settings, metrics: Metrics, preprocessor: Preprocessor
) -> dict:
    limit = min(settings.sync_max_duration_s, settings.max_duration_s)
    hint = "; submit longer videos as a job (POST /v1/jobs)"
    upload = await receive_video(request, settings, metrics, limit, hint)
    try:
        return await preprocessor.request_analysis(upload.path, upload.filename)
    finally:
        remove_quietly(upload.path)
