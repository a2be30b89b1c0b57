"""The audio-visual score (preprocessor/audio_visual.py), the sync model's export and its training loop,
with a tiny random-init model: the reasons a track is or is not scored, the fusion rule, the ONNX contract
and metadata, and that a few training steps run and resume."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch

from deepfake.contracts.metadata import AV_INPUT_MEL, AV_INPUT_MOUTH, AV_METADATA_KEY, AV_OUTPUT, SyncMeta
from preprocessor.audio import SAMPLE_RATE, AudioTrack, log_mel, speech_fraction
from preprocessor.audio_visual import (
    OFFSETS_S,
    AudioVisualResult,
    fuse,
    out_of_sync_p,
    score_track,
    window_span,
)
from preprocessor.mouth import MOUTH_H, MOUTH_W, mouth_crop
from training.export_sync import build_sync_meta, export
from training.sync_model import CONFIGS, SyncNet, TorchSyncModel
from training.train_sync import Clip, TrainSyncConfig, train

FPS = 25.0
COEF = {"intercept": 0.5, "plausible_conf": -1.0, "implausible_margin": 1.0}


def speech(seconds: float, start_s: float = 0.0) -> AudioTrack:
    """Speech-like sound (harmonics of 140 Hz, 4 syllables a second) from ``start_s``."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 13))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    return AudioTrack((0.1 * tone * envelope / np.abs(tone).max()).astype(np.float32), start_s)


def silence(seconds: float) -> AudioTrack:
    return AudioTrack(np.zeros(int(seconds * SAMPLE_RATE), np.float32), 0.0)


def windows(
    n: int, size: int = 64, t_len: int = 8, spacing_s: float = 1.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` sampling windows of random face crops, frames every 2nd video frame at 25 fps."""
    rng = np.random.default_rng(0)
    out = []
    for w in range(n):
        times = 0.2 + w * spacing_s + np.arange(t_len) * 2 / FPS
        out.append((rng.integers(0, 256, (t_len, size, size, 3), dtype=np.uint8), times))
    return out


@pytest.fixture(scope="module")
def tiny_model() -> TorchSyncModel:
    torch.manual_seed(0)
    net = SyncNet(CONFIGS["tiny"])
    return TorchSyncModel(net, build_sync_meta(net.cfg, {"score_coef": COEF}, "test"))


def test_motion_only_model_ignores_the_mouths_appearance():
    """``appearance=False`` (the ``motion`` config) sees frame differences only: two different mouths held
    still give it the same input (no motion), so the same logits; the full model tells them apart."""
    from dataclasses import replace

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    still = [
        np.repeat(rng.integers(0, 256, (2, 1, MOUTH_H, MOUTH_W), dtype=np.uint8), 8, axis=1) for _ in "ab"
    ]
    mel = torch.from_numpy(rng.normal(size=(2, 3, 80, 64)).astype(np.float32))
    for appearance, same in ((False, True), (True, False)):
        net = SyncNet(replace(CONFIGS["tiny"], appearance=appearance)).eval()
        with torch.no_grad():
            a, b = (net(torch.from_numpy(m), mel) for m in still)
        assert a.shape == (2, 3)
        assert torch.allclose(a, b, atol=1e-5) is same


def test_mouth_crop_shape_and_place():
    face = np.zeros((160, 160, 3), np.uint8)
    face[112:128, 64:96] = 255  # a bright mouth where the measured cut puts one
    mouth = mouth_crop(face)
    assert mouth.shape == (MOUTH_H, MOUTH_W) and mouth.dtype == np.uint8
    rows, cols = np.nonzero(mouth > 128)
    assert 0.25 < rows.mean() / MOUTH_H < 0.75 and 0.35 < cols.mean() / MOUTH_W < 0.65
    with pytest.raises(ValueError):
        mouth_crop(np.zeros((160, 120, 3), np.uint8))


def test_window_span_covers_the_last_frame():
    a, b = window_span(np.arange(8) * 2 / FPS)
    assert a == 0.0 and b == pytest.approx(16 / FPS)


def test_no_audio(tiny_model):
    res = score_track(None, None, windows(4), tiny_model)
    assert res == AudioVisualResult(None, None, 0, "no_audio")


def test_silent_audio_is_no_speech_never_evidence(tiny_model):
    res = score_track(silence(5.0), None, windows(4), tiny_model)
    assert (res.score, res.offset_s, res.windows_scored, res.reason) == (None, None, 0, "no_speech")


def test_one_speech_window_is_too_few(tiny_model):
    """Speech only from 3.0 s: of four windows (0.2, 1.2, 2.2, 3.2 s) only the last has any."""
    sound = np.concatenate([silence(3.0).samples, speech(2.0).samples])
    res = score_track(AudioTrack(sound, 0.0), None, windows(4), tiny_model)
    assert res.reason == "too_few_windows" and res.windows_scored == 1 and res.score is None


def test_speech_windows_are_scored(tiny_model):
    audio = speech(5.0)
    assert speech_fraction(audio, 0.2, 0.84) >= tiny_model.meta.min_speech_fraction
    res = score_track(audio, log_mel(audio), windows(4), tiny_model)
    assert res.reason == "scored" and res.windows_scored == 4
    assert res.score is not None and 0.0 < res.score < 1.0
    assert res.offset_s in OFFSETS_S
    assert res.features is not None and res.score == pytest.approx(out_of_sync_p(res.features, COEF))


def test_a_model_without_coefficients_gives_features_but_no_score(tiny_model):
    bare = TorchSyncModel(tiny_model.model, SyncMeta(clip_len=8, offsets_s=list(OFFSETS_S)))
    res = score_track(speech(5.0), None, windows(3), bare)
    assert res.reason == "uncalibrated" and res.score is None and res.features is not None


def test_fuse():
    combiner = {"intercept": -0.2, "visual": 1.0, "audio_visual": 0.8}
    unscored = AudioVisualResult(None, None, 0, "no_speech")
    assert fuse(0.3, unscored, combiner) == 0.3
    assert fuse(0.3, AudioVisualResult(0.9, 0.6, 4, "scored"), {}) == 0.3
    low, high = (fuse(0.3, AudioVisualResult(p, 0.0, 4, "scored"), combiner) for p in (0.1, 0.9))
    assert low < high
    z = -0.2 + math.log(0.3 / 0.7) + 0.8 * math.log(0.9 / 0.1)
    assert high == pytest.approx(1 / (1 + math.exp(-z)))


def test_tiny_export_contract_and_metadata(tmp_path):
    """The exported file: inputs mouth/mel with dynamic N and K, output [N, K], SyncMeta under its key,
    ONNX Runtime matching torch (export verifies it and raises otherwise)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    net = SyncNet(CONFIGS["tiny"])
    meta = build_sync_meta(net.cfg, {"score_coef": COEF, "combiner": {"visual": 1.0}, "threshold": 0.6}, "t")
    summary = export(net, meta, tmp_path)
    assert summary["max_abs_diff"] < 1e-3
    path = tmp_path / "av_sync" / "1" / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    got = SyncMeta.from_json(props[AV_METADATA_KEY])
    assert got.offsets_s == list(OFFSETS_S) and got.mouth == (MOUTH_H, MOUTH_W) and got.threshold == 0.6
    assert got.score_coef == COEF and json.loads(props[AV_METADATA_KEY])["n_mels"] == 80
    # the Triton config is written from the installed file, carrying the same metadata
    from inference.triton_launcher import read_model_config

    config = read_model_config(tmp_path / "av_sync" / "config.pbtxt")
    assert summary["config"] == str(tmp_path / "av_sync" / "config.pbtxt") and config.name == "av_sync"
    assert SyncMeta.from_json(config.parameters[AV_METADATA_KEY].string_value) == got
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [AV_INPUT_MOUTH, AV_INPUT_MEL]
    mouth = np.zeros((5, 8, MOUTH_H, MOUTH_W), np.uint8)
    mel = np.zeros((5, 7, 80, 64), np.float32)
    assert sess.run([AV_OUTPUT], {AV_INPUT_MOUTH: mouth, AV_INPUT_MEL: mel})[0].shape == (5, 7)


def synthetic_clip(seed: int, seconds: float = 4.0) -> Clip:
    """A mouth that opens with the loudness of its speech-like audio (what the model must learn)."""
    rng = np.random.default_rng(seed)
    audio = speech(seconds)
    mel, t0 = log_mel(audio)
    n = int(seconds * FPS)
    t = np.arange(n) / FPS
    loud = np.clip(np.sin(2 * np.pi * 4 * (t + rng.uniform(0, 0.1))), 0, None)
    mouth = np.full((n, MOUTH_H, MOUTH_W), 90, np.uint8)
    for i, v in enumerate(loud):
        h = int(2 + v * 14)
        mouth[i, 24 - h // 2 : 24 + h // 2, 30:66] = 20
    starts = np.arange(0, n - 15)
    return Clip(f"synthetic{seed}", f"src{seed % 2}", mouth, t, mel, t0, starts)


def test_training_smoke_tiny_runs_and_resumes(tmp_path):
    cfg = TrainSyncConfig(model="tiny", steps=4, batch=4, save_every=2)
    clips = ([synthetic_clip(i) for i in range(3)], [synthetic_clip(9)])
    ckpt = train(None, cfg, tmp_path, clips=clips)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 4 and state["done"] and state["model_config"]["name"] == "tiny"
    more = TrainSyncConfig(model="tiny", steps=6, batch=4, save_every=2)
    state = torch.load(train(None, more, tmp_path, clips=clips), map_location="cpu", weights_only=False)
    assert state["step"] == 6  # resumed from step 4, not restarted
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(x["loss"]) for x in lines)


def test_shipped_model_scores_real_footage(data_dir, default_detector):
    """The committed av_sync model on a real clip with speech, through the serving pipeline's face track:
    every window of the track is a speech window and the track is scored (a probability, an offset on
    the grid), with the metadata's fitted rule."""
    from pathlib import Path

    from preprocessor.audio import decode_audio
    from preprocessor.pipeline import Pipeline
    from preprocessor.settings import PipelineSettings
    from training.sync_data import visual_meta
    from training.sync_eval import OnnxSync

    shipped = Path(__file__).resolve().parents[1] / "model_repository" / "av_sync" / "1" / "model.onnx"
    sync = OnnxSync(shipped)
    assert sync.meta.score_coef and sync.meta.combiner and sync.meta.offsets_s == list(OFFSETS_S)
    video = data_dir / "videos" / "FSGAN_examples" / "real" / "conan_obrien.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not in the data folder")
    meta = visual_meta()
    pipeline = Pipeline(PipelineSettings(), None, detector=default_detector, crop=meta.crop, clip_len=8)
    track = max(pipeline.extract_faces(video).tracks, key=lambda t: len(t.detections))
    by_window: dict[int, list] = {}
    for d in track.detections:
        by_window.setdefault(d.window, []).append(d)
    windows = [(np.stack([d.crop for d in ds]), np.array([d.t for d in ds])) for ds in by_window.values()]
    res = score_track(decode_audio(video), None, windows, sync)
    assert res.reason == "scored" and res.windows_scored >= 2
    assert res.score is not None and 0.0 < res.score < 1.0 and res.offset_s in OFFSETS_S


def test_evaluation_picks_the_windows_serving_samples():
    """From an every-frame track, the evaluation takes plan_windows' windows: 8 frames every 2nd frame at
    each planned start, and none where the track has a gap."""
    from preprocessor.sampling import plan_windows
    from training.sync_eval import serving_windows

    n = 250  # 10 s at 25 fps
    t = np.arange(n) / FPS
    keep = (t < 6.0) | (t > 7.5)  # the face is gone for 1.5 s
    track = {"t": t[keep], "mouth": np.zeros((int(keep.sum()), MOUTH_H, MOUTH_W), np.uint8)}
    plan = plan_windows(10.0, FPS, 32, 8, 2)
    got = serving_windows(track, 10.0, FPS, 32, 8)
    inside = [s for s in plan.starts if not (6.0 - 16 / FPS < s < 7.5)]
    assert len(got) == len(inside) < len(plan.starts)
    for (mouths, times), start in zip(got, inside, strict=True):
        assert mouths.shape == (8, MOUTH_H, MOUTH_W)
        assert times[0] == pytest.approx(start, abs=1 / FPS) and np.allclose(np.diff(times), 2 / FPS)


def test_fused_threshold_keeps_the_visual_false_alarms():
    from training.sync_eval import same_false_alarms

    rng = np.random.default_rng(0)
    recs = [
        {"label": "real", "visual_p": float(v), "fused_p": float(f)} for v, f in rng.uniform(0, 1, (50, 2))
    ]
    recs += [{"label": "fake", "visual_p": 0.9, "fused_p": 0.9}]
    at = same_false_alarms(recs, 0.6)
    reals = [r for r in recs if r["label"] == "real"]
    assert sum(r["fused_p"] >= at for r in reals) == sum(r["visual_p"] >= 0.6 for r in reals)
    assert sum(r["fused_p"] >= np.nextafter(at, 0.0) for r in reals) > sum(
        r["visual_p"] >= 0.6 for r in reals
    )
