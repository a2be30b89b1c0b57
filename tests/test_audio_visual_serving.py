"""The audio-visual signal as the product serves it: the pipeline's audio-visual step, the result contract
(tracks[].audio_visual, signals, the fused score and its threshold), the fusion rule in aggregate, and the
CLI's flags, on synthetic videos with speech-like audio, a tone, or none, and the tiny random sync model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepfake.settings import REPO_ROOT
from inference.onnx_backend import OnnxBackend
from inference.sync_backend import OnnxSyncModel
from preprocessor.aggregate import ClipScore, aggregate
from preprocessor.audio_visual import AudioVisualResult, fuse
from preprocessor.pipeline import Pipeline, track_windows
from preprocessor.settings import PipelineSettings
from tests import synth
from tests.random_sync_model import default_sync_meta
from tests.synth_speech import mux_audio, mux_garbage_audio, speech_like
from tests.test_aggregate import make_track


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("av_videos")
    silent = synth.write_face_video(root / "silent.mp4", n_frames=75).path  # 3 s, no audio stream
    return {
        "speech": mux_audio(silent, root / "speech.mp4", speech_like(3.0)),
        "tone": synth.write_face_video(root / "tone.mp4", n_frames=75, audio=True).path,  # no speech
        "silent": silent,
        "broken": mux_garbage_audio(silent, root / "broken_audio.mkv"),
    }


@pytest.fixture(scope="module")
def pipeline(random_model_path, random_sync_model_path, default_detector) -> Pipeline:
    return Pipeline(
        PipelineSettings(threads=1),
        OnnxBackend(random_model_path, threads=1),
        default_detector,
        sync_model=OnnxSyncModel(random_sync_model_path, threads=1),
    )


def test_speech_gets_a_score_per_track_but_the_verdict_stays_visual_by_default(pipeline, videos):
    """fuse_audio_visual is off by default (its gain out of fold did not hold across seeds): the signal is
    computed and reported, score and verdict are the visual ones."""
    result = pipeline.analyze(videos["speech"])
    assert result.signals is not None and result.signals.audio_visual is not None
    assert result.threshold == pipeline.meta.threshold
    for track in result.tracks:
        assert track.audio_visual is not None and track.audio_visual.reason == "scored"
        assert track.signals is not None and track.signals.audio_visual == track.audio_visual.score
        assert track.score == track.signals.visual and track.threshold == pipeline.meta.threshold


def test_speech_gets_a_score_per_track_fused_at_the_sync_models_threshold(
    random_model_path, random_sync_model_path, default_detector, videos
):
    pipeline = Pipeline(
        PipelineSettings(threads=1, fuse_audio_visual=True),
        OnnxBackend(random_model_path, threads=1),
        default_detector,
        sync_model=OnnxSyncModel(random_sync_model_path, threads=1),
    )
    result = pipeline.analyze(videos["speech"])
    meta = default_sync_meta()
    assert result.sync_model is not None and result.sync_model.name == meta.name
    assert result.tracks and result.video.has_audio
    for track in result.tracks:
        av = track.audio_visual
        assert av is not None and av.reason == "scored" and av.score is not None, av
        assert av.windows_scored >= meta.min_windows and av.offset_s is not None
        assert track.signals is not None and track.signals.audio_visual == av.score
        visual = track.signals.visual
        assert visual == pytest.approx(float(np.mean(track.clip_scores)), abs=1e-4)
        want = fuse(
            visual, AudioVisualResult(av.score, av.offset_s, av.windows_scored, av.reason), meta.combiner
        )
        assert track.score == pytest.approx(want, abs=2e-4) and track.score != pytest.approx(visual, abs=1e-3)
        assert track.threshold == meta.threshold
    assert result.signals is not None and result.signals.audio_visual is not None
    assert result.score == max(t.score for t in result.tracks if t.used_for_verdict)
    assert result.threshold == meta.threshold
    assert {"audio", "audio_visual"} <= set(result.timings_ms)


@pytest.mark.parametrize(("name", "reason"), [("silent", "no_audio"), ("tone", "no_speech")])
def test_no_audio_or_no_speech_is_no_evidence_and_the_score_stays_visual(pipeline, videos, name, reason):
    result = pipeline.analyze(videos[name])
    assert result.tracks
    assert result.signals is not None and result.signals.audio_visual is None
    assert result.score == result.signals.visual
    assert result.threshold == pipeline.meta.threshold  # the visual model's, nothing was fused
    for track in result.tracks:
        assert track.audio_visual is not None and track.audio_visual.reason == reason
        assert track.audio_visual.score is None and track.signals is not None
        assert track.score == track.signals.visual and track.threshold == pipeline.meta.threshold


def test_audio_that_cannot_be_decoded_leaves_the_visual_verdict_and_says_so(pipeline, videos):
    result = pipeline.analyze(videos["broken"])
    assert result.video.has_audio and result.tracks
    assert {t.audio_visual.reason for t in result.tracks if t.audio_visual} == {"audio_error"}
    assert result.signals is not None and result.signals.audio_visual is None
    assert result.score == result.signals.visual and result.threshold == pipeline.meta.threshold
    assert any("audio could not be decoded" in w for w in result.warnings)


def test_track_windows_carry_the_samplers_times(pipeline, videos):
    faces = pipeline.extract_faces(videos["speech"])
    windows = track_windows(faces.tracks[0], faces.sample_times)
    assert len(windows) == len({d.window for d in faces.tracks[0].detections})
    for crops, times in windows:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (64, 64, 3) and len(crops) == len(times)
        assert np.all(np.diff(times) > 0)
        assert set(times.tolist()) <= set(faces.sample_times)


def test_aggregate_fuses_only_where_there_is_a_score_and_picks_the_face_furthest_over_its_threshold():
    meta = default_sync_meta().model_copy(update={"threshold": 0.9})
    tracks = [make_track(0, [0, 1], True), make_track(1, [2, 3], True)]
    clips = [ClipScore(0, [0, 1], 0.7, [0.7, 0.7]), ClipScore(1, [0, 1], 0.8, [0.8, 0.8])]
    scored = AudioVisualResult(0.2, 0.0, 3, "scored")
    none = AudioVisualResult(None, None, 0, "no_speech")
    answer = aggregate(tracks, clips, [0, 0.5, 1, 1.5], 0.5, [none, scored], meta)
    first, second = answer.tracks
    assert first.score == 0.7 and first.threshold == 0.5 and first.verdict == "fake"  # visual alone
    assert second.score == pytest.approx(fuse(0.8, scored, meta.combiner), abs=1e-4)
    assert second.threshold == 0.9 and second.verdict == "real"
    # The video is judged by the face furthest above its own threshold: the first, though it scores less.
    assert (answer.verdict, answer.score, answer.threshold) == ("fake", 0.7, 0.5)
    assert answer.signals.visual == 0.8 and answer.signals.audio_visual == 0.2
    off = aggregate(tracks, clips, [0, 0.5, 1, 1.5], 0.5)
    assert [t.audio_visual.reason for t in off.tracks if t.audio_visual] == ["disabled", "disabled"]
    assert off.signals.audio_visual is None and off.score == 0.8


def detect(video: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "detect", "--json", "--no-progress", *flags, str(video)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_loads_the_sync_model_and_no_audio_turns_the_signal_off(
    videos, random_model_path, random_sync_model_path, default_detector
):
    model = ["--model", str(random_model_path)]
    on = detect(videos["speech"], *model, "--sync-model", str(random_sync_model_path))
    assert on.returncode == 0, on.stderr
    with_audio = json.loads(on.stdout)
    assert with_audio["sync_model"]["backend"] == "onnxruntime"
    assert {t["audio_visual"]["reason"] for t in with_audio["tracks"]} == {"scored"}

    off = detect(videos["speech"], *model, "--sync-model", str(random_sync_model_path), "--no-audio")
    assert off.returncode == 0, off.stderr
    without = json.loads(off.stdout)
    assert without["sync_model"] is None and without["signals"]["audio_visual"] is None
    assert {t["audio_visual"]["reason"] for t in without["tracks"]} == {"disabled"}
    assert without["score"] == without["signals"]["visual"] == with_audio["signals"]["visual"]

    # By default the signal is on only where the model file is; asked for and missing, it is an error.
    missing = str(Path(random_sync_model_path).with_name("missing.onnx"))
    default = detect(videos["speech"], *model, env={"DEEPFAKE_SYNC_MODEL_PATH": missing})
    assert default.returncode == 0 and json.loads(default.stdout)["sync_model"] is None
    asked = detect(
        videos["speech"], *model, env={"DEEPFAKE_SYNC_MODEL_PATH": missing, "DEEPFAKE_AUDIO_VISUAL": "1"}
    )
    assert asked.returncode == 1 and "sync model file not found" in asked.stderr


def test_the_preprocessor_service_runs_the_sync_model_it_is_given(
    tmp_path, videos, pipeline, random_model_path, random_sync_model_path
):
    from fastapi.testclient import TestClient

    from preprocessor.app import create_app
    from preprocessor.service_settings import ServiceSettings

    app = create_app(
        ServiceSettings(upload_dir=tmp_path / "uploads", threads=1),
        backend_factory=lambda: OnnxBackend(random_model_path, threads=1),
        sync_factory=lambda: OnnxSyncModel(random_sync_model_path, threads=1),
    )
    with TestClient(app, client=("127.0.0.1", 50000)) as client, videos["speech"].open("rb") as handle:
        response = client.post("/v1/analyze", files={"file": ("speech.mp4", handle, "video/mp4")})
    assert response.status_code == 200, response.text
    got, want = response.json(), pipeline.analyze(videos["speech"]).model_dump(mode="json")
    assert got["sync_model"]["sha256"] == want["sync_model"]["sha256"]
    assert got["signals"] == want["signals"] and got["score"] == want["score"]
    assert [t["audio_visual"] for t in got["tracks"]] == [t["audio_visual"] for t in want["tracks"]]


def test_the_cli_path_needs_no_serve_extra():
    """The pipeline and `detect` with the sync model import no tritonclient (the serve extra): a laptop
    install of the core dependencies runs both signals."""
    code = (
        "import sys, cli.commands.detect, preprocessor.pipeline, inference.sync_backend;"
        "assert 'tritonclient' not in sys.modules, 'tritonclient was imported'"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
