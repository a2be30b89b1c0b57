"""Evidence images (thumbnail, heatmap, strip), their files and the HTML report, on synthetic videos.

The model is the random-weight test model with a blend-map output equal to pixel brightness, so the
heatmap can be checked against what the model really returned for the crop it was shown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake.contracts.schemas import DetectionResult
from deepfake.evidence_files import NAME_PATTERN, decode_data_uri, externalise, inline
from deepfake.report import render_report
from deepfake.settings import REPO_ROOT
from inference.onnx_backend import OnnxBackend, file_sha256
from preprocessor.evidence import BOX_COLOUR, SmallFrame, heatmap_overlay, strip_image
from preprocessor.pipeline import Pipeline
from preprocessor.settings import PipelineSettings
from preprocessor.tracking import Detection, FaceTrack
from tests.random_model import default_test_meta, write_random_model


def jpeg(ref: str) -> np.ndarray:
    data = np.frombuffer(decode_data_uri(ref), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def blend_model_path(tmp_path_factory) -> Path:
    return write_random_model(
        tmp_path_factory.mktemp("blend") / "model.onnx", default_test_meta(), blend_map=True
    )


@pytest.fixture(scope="module")
def pipeline(blend_model_path, default_detector) -> Pipeline:
    settings = PipelineSettings(frames=16, threads=1)
    return Pipeline(settings, OnnxBackend(blend_model_path, 1), default_detector)


@pytest.fixture(scope="module")
def two_faces(pipeline, synth_videos) -> tuple[DetectionResult, DetectionResult]:
    path = synth_videos["two"].path
    return pipeline.analyze(path), pipeline.analyze(path, evidence=True)


def test_evidence_changes_no_score_and_is_absent_unless_asked(two_faces):
    plain, with_evidence = two_faces
    assert all(t.evidence is None for t in plain.tracks)
    assert [t.score for t in plain.tracks] == [t.score for t in with_evidence.tracks]
    assert plain.score == with_evidence.score
    assert "evidence" in with_evidence.timings_ms


def test_each_track_gets_a_thumbnail_at_its_most_suspicious_frame(two_faces):
    _, result = two_faces
    assert len(result.tracks) == 2
    for track in result.tracks:
        evidence = track.evidence
        assert evidence is not None
        scored = [f for f in track.frames if f.score is not None]
        top = max(scored, key=lambda f: f.score)
        assert evidence.frame_score == top.score and evidence.frame_t == pytest.approx(top.t, abs=1e-3)
        thumb = jpeg(evidence.thumbnail)
        assert thumb.shape == (160, 160, 3)  # the 64 px model crop, enlarged for people


def test_heatmap_is_the_models_blend_map_over_the_crop(two_faces):
    _, result = two_faces
    for track in result.tracks:
        thumb = jpeg(track.evidence.thumbnail).astype(np.float32)
        heat = jpeg(track.evidence.heatmap).astype(np.float32)
        # Blend map = brightness: bright pixels turn red (JET high), dark ones blue (JET low).
        bright = thumb.mean(axis=2) > np.percentile(thumb.mean(axis=2), 80)
        dark = thumb.mean(axis=2) < np.percentile(thumb.mean(axis=2), 20)
        red_minus_blue = heat[..., 0] - heat[..., 2]
        assert red_minus_blue[bright].mean() > red_minus_blue[dark].mean() + 20


def test_strip_shows_sampled_frames_with_the_track_box(two_faces, synth_videos):
    _, result = two_faces
    for track in result.tracks:
        strip = jpeg(track.evidence.strip)
        times = track.evidence.strip_times
        assert 2 <= len(times) <= 6 and times == sorted(times)
        assert {round(f.t, 3) for f in track.frames} >= set(times)
        assert strip.shape[0] == 120
        video = synth_videos["two"]
        tile_width = video.width * 120 / video.height  # each tile keeps the frame's aspect (+-1 px rounding)
        assert abs(strip.shape[1] - (len(times) * tile_width + 4 * (len(times) - 1))) <= len(times)


def test_strip_box_is_drawn_where_the_detection_is():
    frame = np.full((200, 400, 3), 128, dtype=np.uint8)
    det = Detection(
        sample=0, frame_index=0, t=0.0, window=0, box=np.array([100, 50, 200, 150], np.float32), score=1.0
    )
    strip, times = strip_image(FaceTrack(id=1, detections=[det]), {0: SmallFrame(frame[::2, ::2], 0.5)})
    assert times == [0.0] and strip.shape == (120, 240, 3)
    # The box edge at x=100 px full-res -> 50 px on the half-size copy -> 60 px on the 120 px tall strip.
    edge = strip[50:60, 60].mean(axis=0)
    assert np.abs(edge - np.array(BOX_COLOUR)).max() < 40
    assert np.abs(strip[5, 5] - 128).max() < 3


def test_heatmap_of_a_uniformly_low_map_stays_blue():
    crop = np.full((64, 64, 3), 128, dtype=np.uint8)
    low = heatmap_overlay(crop, np.zeros((8, 8), np.float32)).astype(int)
    high = heatmap_overlay(crop, np.ones((8, 8), np.float32)).astype(int)
    assert low[..., 2].mean() > low[..., 0].mean() + 40
    assert high[..., 0].mean() > high[..., 2].mean() + 40


def test_result_names_file_checksum_time_and_model_rates(two_faces, synth_videos):
    _, result = two_faces
    assert result.video.sha256 == file_sha256(synth_videos["two"].path)
    assert result.analyzed_at is not None and result.analyzed_at.tzinfo is not None
    # The random test model has no measured rates in its metadata: they stay null, never invented.
    assert result.model.reals_called_fake is None and result.model.fakes_caught is None


def test_externalise_then_inline_round_trips_the_images(two_faces, tmp_path):
    _, result = two_faces
    copy = result.model_copy(deep=True)
    names = externalise(copy, lambda name, data: (tmp_path / name).write_bytes(data) and f"/files/{name}")
    assert len(names) == 6 and all(NAME_PATTERN.match(n) for n in names)
    assert copy.tracks[0].evidence.thumbnail == f"/files/track-{copy.tracks[0].id}-thumbnail.jpg"
    back = inline(copy, lambda name: (tmp_path / name).read_bytes())
    assert back.tracks[0].evidence.thumbnail == result.tracks[0].evidence.thumbnail
    gone = inline(copy, lambda name: None)
    assert all(t.evidence is None for t in gone.tracks)


def test_report_is_self_contained_and_names_what_it_judged(two_faces):
    _, result = two_faces
    html = render_report(result)
    for needed in (result.video.sha256, result.model.sha256, result.model.version, "Limits of the method"):
        assert needed in html
    assert html.count("data:image/jpeg;base64,") == 6  # 2 faces x (thumbnail, heatmap, strip)
    assert "<svg" in html and "<polyline" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # Two counted faces: the higher-scoring one decided, the other is said to have counted.
    assert html.count("decided the verdict") == 1 and html.count("another face scored higher") == 1
    top = max(result.tracks, key=lambda t: t.score)
    assert f"Face {top.id}: {top.verdict}, score {top.score:.2f}</h3><p>" in html
    section = html.split(f"Face {top.id}: ", 1)[1].split("</section>", 1)[0]
    assert "decided the verdict" in section


def detect_rows(model: Path, *args: str) -> list[dict]:
    """`deepfake detect --json` as a process; one JSON record per input."""
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "detect", "--json", "--no-progress", "--frames", "8",
         "--model", str(model), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def detect(model: Path, video: Path, *flags: str) -> dict:
    return detect_rows(model, *flags, str(video))[-1]


def test_cli_writes_evidence_files_and_a_report(blend_model_path, synth_videos, default_detector, tmp_path):
    video = synth_videos["pan"].path
    flags = ("--evidence", str(tmp_path / "ev"), "--report", str(tmp_path / "out.html"))
    row = detect(blend_model_path, video, *flags)
    evidence = row["tracks"][0]["evidence"]
    folder = tmp_path / "ev" / video.stem
    for kind in ("thumbnail", "heatmap", "strip"):
        path = Path(evidence[kind])
        assert path.parent == folder and path.is_file()
        assert cv2.imread(str(path)) is not None
    report = (tmp_path / "out.html").read_text()
    assert report.count("data:image/jpeg;base64,") == 3 and row["video"]["sha256"] in report


def test_cli_report_ending_in_pdf_is_a_pdf(
    random_model_path, synth_videos, default_detector, tmp_path, pdf_support
):
    row = detect(random_model_path, synth_videos["pan"].path, "--report", str(tmp_path / "out.pdf"))
    assert row["tracks"][0]["evidence"] is None  # the images live in the report
    pdf = (tmp_path / "out.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/DCTDecode") == 2  # thumbnail + strip: no blend map


def test_cli_inputs_with_the_same_name_keep_their_own_evidence_and_reports(
    random_model_path, synth_videos, default_detector, tmp_path
):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(synth_videos["pan"].path, tmp_path / folder / "clip.mp4")
    outputs = ("--evidence", str(tmp_path / "ev"), "--report", str(tmp_path / "rep"))
    inputs = (str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"))
    rows = detect_rows(random_model_path, *outputs, *inputs)
    folders = [Path(row["tracks"][0]["evidence"]["thumbnail"]).parent.name for row in rows]
    assert folders == ["clip", "clip-2"]
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["clip-2.html", "clip.html"]
