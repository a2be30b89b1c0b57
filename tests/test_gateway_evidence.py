"""Evidence images and the HTML report through the gateway: stored with the job, same key, gone with it.

Both services' real apps (the preprocessor in-process behind httpx's ASGI transport, as tests/test_gateway
does); the model is the random test model with a blend-map output, so every track has a heatmap.
"""

from __future__ import annotations

import asyncio
import os
import time

import cv2
import numpy as np
import pytest

from deepfake.evidence_files import KINDS
from tests.random_model import default_test_meta, write_random_model
from tests.test_gateway import KEY, assert_error_shape, make_gateway, post_video, wait_for_job


@pytest.fixture()
def gateway(tmp_path, default_detector):
    model = write_random_model(tmp_path / "model" / "model.onnx", default_test_meta(), blend_map=True)
    with make_gateway(tmp_path, model) as client:
        client.headers["X-API-Key"] = KEY
        yield client


def finished_job(gateway, video) -> tuple[str, dict]:
    created = post_video(gateway, "/v1/jobs", video)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert wait_for_job(gateway, job_id)["state"] == "succeeded"
    return job_id, gateway.get(f"/v1/jobs/{job_id}/result").json()


def test_a_job_keeps_its_evidence_images_under_the_same_key(gateway, synth_videos, tmp_path):
    job_id, result = finished_job(gateway, synth_videos["two"].path)
    assert len(result["tracks"]) == 2
    for track in result["tracks"]:
        evidence = track["evidence"]
        for kind in KINDS:
            url = evidence[kind]
            assert url == f"http://testserver/v1/jobs/{job_id}/evidence/track-{track['id']}-{kind}.jpg"
            image = gateway.get(url)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            assert cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR) is not None
            assert_error_shape(gateway.get(url, headers={"X-API-Key": "other-key"}), 404, "job_not_found")
            assert_error_shape(gateway.get(url, headers={"X-API-Key": ""}), 401, "unauthorized")
    for name in ("track-1-face.jpg", "..jobs.sqlite", "track-999-strip.jpg"):
        assert_error_shape(gateway.get(f"/v1/jobs/{job_id}/evidence/{name}"), 404, "evidence_not_found")
    traversal = gateway.get(f"/v1/jobs/{job_id}/evidence/..%2F..%2Fjobs.sqlite")
    assert traversal.status_code == 404 and "error" in traversal.json()
    assert (tmp_path / "evidence" / job_id).is_dir()
    assert gateway.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not (tmp_path / "evidence" / job_id).exists()
    first = result["tracks"][0]["evidence"]["thumbnail"]
    assert_error_shape(gateway.get(first), 404, "job_not_found")


def test_the_report_inlines_the_images_and_names_the_file(gateway, synth_videos):
    job_id, result = finished_job(gateway, synth_videos["pan"].path)
    report = gateway.get(f"/v1/jobs/{job_id}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    html = report.text
    assert html.count("data:image/jpeg;base64,") == 3 * len(result["tracks"])
    assert result["video"]["sha256"] in html and result["model"]["sha256"] in html
    assert "pan.mp4" in html and "Limits of the method" in html and "/v1/jobs/" not in html
    assert_error_shape(gateway.get(f"/v1/jobs/{job_id}/report", headers={"X-API-Key": "other-key"}), 404,
                       "job_not_found")  # fmt: skip


def test_the_report_as_pdf_holds_the_same_images(gateway, synth_videos, pdf_support):
    job_id, result = finished_job(gateway, synth_videos["pan"].path)
    pdf = gateway.get(f"/v1/jobs/{job_id}/report", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and pdf.content.rstrip().endswith(b"%%EOF")
    # Each evidence JPEG is embedded as an image XObject (DCT-encoded, as it was stored).
    assert pdf.content.count(b"/DCTDecode") == 3 * len(result["tracks"])
    bad = gateway.get(f"/v1/jobs/{job_id}/report", params={"format": "docx"})
    assert_error_shape(bad, 422, "invalid_request")


def test_report_of_an_unknown_job_is_404_and_sync_results_carry_no_evidence(gateway, synth_videos):
    assert_error_shape(gateway.get("/v1/jobs/nope/report"), 404, "job_not_found")
    sync = post_video(gateway, "/v1/detections", synth_videos["pan"].path)
    assert sync.status_code == 200 and all(t["evidence"] is None for t in sync.json()["tracks"])


def test_evidence_of_jobs_that_no_longer_exist_is_swept(tmp_path, synth_videos, default_detector):
    model = write_random_model(tmp_path / "model" / "model.onnx", default_test_meta())
    with make_gateway(tmp_path, model, upload_orphan_age_s=60) as client:
        client.headers["X-API-Key"] = KEY
        job_id, _ = finished_job(client, synth_videos["pan"].path)
        root = tmp_path / "evidence"
        orphan, fresh = root / ("0" * 32), root / ("1" * 32)
        for folder in (orphan, fresh):
            folder.mkdir()
            (folder / "track-0-strip.jpg").write_bytes(b"x")
        old = time.time() - 120
        os.utime(orphan, (old, old))
        os.utime(root / job_id, (old, old))
        asyncio.run(client.app.state.runner.sweep_uploads())
        assert not orphan.exists()  # no such job, old enough
        assert fresh.exists() and (root / job_id).exists()  # too young; a job that still exists
