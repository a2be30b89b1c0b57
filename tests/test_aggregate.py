"""Aggregation rules: calibration, track mean, most suspicious deciding track, timeline, inconclusive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preprocessor.aggregate import ClipScore, aggregate, calibrate
from preprocessor.tracking import Detection, FaceTrack


def test_calibrate_is_a_tempered_sigmoid_and_stable():
    assert calibrate(0.0, 1.0) == pytest.approx(0.5)
    assert calibrate(2.0, 2.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert calibrate(np.array([-1000.0, 1000.0]), 1.0).tolist() == [0.0, 1.0]


def make_track(track_id: int, samples: list[int], used: bool) -> FaceTrack:
    dets = [Detection(s, s, s * 0.5, s // 4, np.array([0, 0, 100, 100], np.float32), 0.9) for s in samples]
    return FaceTrack(track_id, dets, used_for_verdict=used)


def test_video_score_is_the_most_suspicious_deciding_track():
    tracks = [make_track(0, [0, 1, 2, 3], True), make_track(1, [0, 1], True), make_track(2, [2, 3], False)]
    clips = [
        ClipScore(0, [0, 1, 2, 3], 0.2, [0.1, 0.2, 0.3, 0.2]),
        ClipScore(1, [0, 1], 0.7, [0.6, 0.8]),
        ClipScore(2, [0, 1], 0.99, [0.99, 0.99]),  # not deciding: ignored for the verdict
    ]
    answer = aggregate(tracks, clips, [0.0, 0.5, 1.0, 1.5, 2.0], 0.5)
    verdict, score, public, timeline, warnings = (
        answer.verdict,
        answer.score,
        answer.tracks,
        answer.timeline,
        answer.warnings,
    )
    assert verdict == "fake" and score == pytest.approx(0.7)
    assert [t.verdict for t in public] == ["real", "fake", "fake"]
    assert public[2].used_for_verdict is False
    assert [p.score for p in timeline] == [0.6, 0.8, 0.99, 0.99, None]  # max over faces; no face at 2.0 s
    assert public[0].frames[2].score == pytest.approx(0.3)
    assert warnings == []


def test_track_score_is_the_mean_of_its_clips():
    tracks = [make_track(0, [0, 1, 4, 5], True)]
    clips = [ClipScore(0, [0, 1], 0.2, [0.2, 0.2]), ClipScore(0, [2, 3], 0.6, [0.6, 0.6])]
    answer = aggregate(tracks, clips, [0, 0.5, 2, 2.5], 0.5)
    assert answer.score == pytest.approx(0.4) and answer.verdict == "real"
    assert answer.tracks[0].clip_scores == [0.2, 0.6]


def test_no_face_is_inconclusive_with_a_warning():
    answer = aggregate([], [], [0.0, 1.0], 0.5)
    assert answer.verdict == "inconclusive" and answer.score is None and answer.tracks == []
    assert [p.score for p in answer.timeline] == [None, None]
    assert any("no usable face" in w for w in answer.warnings)


def test_threshold_is_inclusive():
    tracks = [make_track(0, [0], True)]
    assert aggregate(tracks, [ClipScore(0, [0], 0.5, [0.5])], [0.0], 0.5).verdict == "fake"
