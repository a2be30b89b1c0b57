"""The whole pipeline on synthetic videos with the real default detector and a random-weight ONNX model."""

from __future__ import annotations

import numpy as np
import pytest

from inference.onnx_backend import OnnxBackend
from preprocessor.aggregate import calibrate
from preprocessor.errors import VideoError
from preprocessor.pipeline import Pipeline, make_clips
from preprocessor.settings import PipelineSettings
from preprocessor.tracking import box_iou
from tests.random_model import reference_logits


@pytest.fixture(scope="module")
def pipeline(random_model_path, default_detector) -> Pipeline:
    settings = PipelineSettings(frames=16, threads=1)
    return Pipeline(settings, OnnxBackend(random_model_path, threads=1), default_detector)


def best_iou(box, truths) -> float:
    return max(box_iou(np.array(box), t) for t in truths)


@pytest.mark.parametrize("name", ["pan", "zoom", "rotate", "rotation90", "rotation270", "vfr", "audio"])
def test_one_face_gives_one_track_over_most_frames_at_the_true_place(pipeline, synth_videos, name):
    video = synth_videos[name]
    result = pipeline.analyze(video.path)
    assert result.verdict in ("fake", "real") and result.score is not None
    assert len(result.tracks) == 1, result.warnings
    track = result.tracks[0]
    assert track.used_for_verdict
    assert len(track.frames) >= 0.8 * result.video.frames_sampled
    for frame in track.frames:
        truth_index = int(np.argmin(np.abs(np.array(video.times) - frame.t)))
        assert best_iou(frame.box, video.boxes[truth_index]) > 0.4, (frame.t, frame.box)
    assert result.video.width == video.width and result.video.height == video.height
    assert {"probe", "decode", "detect", "crop", "track", "infer", "aggregate", "total"} <= set(
        result.timings_ms
    )


def test_two_people_give_two_tracks(pipeline, synth_videos):
    result = pipeline.analyze(synth_videos["two"].path)
    assert len(result.tracks) == 2
    lefts = sorted(np.mean([f.box[0] for f in t.frames]) for t in result.tracks)
    assert lefts[0] < 854 / 2 < lefts[1]
    assert result.score == pytest.approx(max(t.score for t in result.tracks), abs=1e-4)


def test_no_face_is_inconclusive(pipeline, synth_videos):
    result = pipeline.analyze(synth_videos["none"].path)
    assert result.verdict == "inconclusive" and result.score is None and result.tracks == []
    assert any("no usable face" in w for w in result.warnings)
    assert len(result.timeline) == result.video.frames_sampled
    assert all(p.score is None for p in result.timeline)


def test_scores_are_the_model_outputs_on_the_policy_crops(pipeline, synth_videos):
    """Recompute the model on extract_faces' crops with numpy: the pipeline must report exactly that."""
    path = synth_videos["pan"].path
    faces = pipeline.extract_faces(path)
    assert all(d.crop.shape == (64, 64, 3) for t in faces.tracks for d in t.detections)
    clips = make_clips(faces.tracks, pipeline.meta.clip_len)
    clip_logits, _ = reference_logits(np.stack([c.crops for c in clips]))
    expected = float(np.mean(calibrate(clip_logits, pipeline.meta.temperature)))
    result = pipeline.analyze(path)
    assert result.tracks[0].score == pytest.approx(expected, abs=2e-4)
    assert result.model.backend == "onnxruntime" and len(result.model.sha256) == 64


@pytest.mark.parametrize("name", ["empty_file", "not_a_video", "jpeg", "no_video_stream", "corrupt_video"])
def test_bad_inputs_raise_video_errors(pipeline, bad_inputs, name):
    with pytest.raises(VideoError) as caught:
        pipeline.analyze(bad_inputs[name])
    assert caught.value.code == ("not_a_video" if name == "jpeg" else name)


def test_progress_reports_stages_up_to_done(pipeline, synth_videos):
    seen: list[tuple[str, float]] = []
    pipeline.analyze(synth_videos["zoom"].path, progress=lambda s, f: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert stages[0] == "detect" and stages[-1] == "done" and "infer" in stages
    assert all(0.0 <= f <= 1.0 for _, f in seen)


def test_extract_faces_without_a_model_uses_the_given_crop_policy(default_detector, synth_videos):
    from deepfake.contracts.metadata import CropPolicy

    pipeline = Pipeline(
        PipelineSettings(frames=8, threads=1), None, default_detector, crop=CropPolicy(size=48)
    )
    faces = pipeline.extract_faces(synth_videos["pan"].path)
    assert faces.tracks and faces.tracks[0].detections[0].crop.shape == (48, 48, 3)
    with pytest.raises(RuntimeError):
        pipeline.analyze(synth_videos["pan"].path)
