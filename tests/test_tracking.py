"""Tracking with constructed boxes: one track per person, short and small ones handled with reasons."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessor.tracking import Detection, box_iou, select_tracks, track_faces


def det(sample: int, box, window: int = 0, score: float = 0.9) -> Detection:
    return Detection(sample, sample, sample / 10, window, np.array(box, dtype=np.float32), score)


def test_box_iou():
    assert box_iou(np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10])) == 1.0
    assert box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == 1 / 3
    assert box_iou(np.array([0, 0, 10, 10]), np.array([20, 20, 30, 30])) == 0.0


def test_two_people_stay_in_two_tracks_even_when_listed_in_changing_order():
    frames = []
    for i in range(8):
        left = det(i, [100 + 3 * i, 100, 200 + 3 * i, 200])
        right = det(i, [500 - 3 * i, 120, 590 - 3 * i, 210])
        frames.append([left, right] if i % 2 else [right, left])
    tracks = track_faces(frames)
    assert len(tracks) == 2
    for track in tracks:
        assert len(track.detections) == 8
        xs = [d.box[0] for d in track.detections]
        assert max(xs) - min(xs) == 21  # the same person all along (moves 3 px per frame)


def test_a_face_that_moved_between_windows_is_the_same_track():
    frames = [[det(i, [100, 100, 200, 200], window=0)] for i in range(4)]
    frames += [[det(4 + i, [190, 110, 290, 210], window=1)] for i in range(4)]  # moved ~1 face width
    assert len(track_faces(frames)) == 1


def test_a_distant_face_in_the_same_window_starts_a_new_track():
    frames = [[det(0, [100, 100, 200, 200])], [det(1, [400, 100, 500, 200])]]
    assert len(track_faces(frames)) == 2


def test_short_tracks_are_dropped_with_a_reason_and_small_ones_do_not_decide():
    frames = []
    for i in range(10):
        faces = [det(i, [100, 100, 220, 220]), det(i, [400, 100, 440, 140])]  # big and small (40 px)
        if i == 3:
            faces.append(det(i, [600, 300, 700, 400]))  # a one-frame false detection
        frames.append(faces)
    kept, warnings = select_tracks(track_faces(frames), 10, 3, 64.0, 0.25, 8)
    assert len(kept) == 2
    assert any("fewer than 3" in w for w in warnings)
    big = next(t for t in kept if t.mean_face_px > 100)
    small = next(t for t in kept if t.mean_face_px < 100)
    assert big.used_for_verdict and not small.used_for_verdict
    assert [t.id for t in kept] == [0, 1]


def test_when_no_track_qualifies_all_decide_with_a_warning():
    frames = [[det(i, [100, 100, 140, 140])] for i in range(10)]
    kept, warnings = select_tracks(track_faces(frames), 10, 3, 64.0, 0.25, 8)
    assert len(kept) == 1 and kept[0].used_for_verdict
    assert any("less reliable" in w for w in warnings)


def test_max_tracks_keeps_the_largest():
    frames = [[det(i, [k * 150, 0, k * 150 + 50 + 10 * k, 50 + 10 * k]) for k in range(4)] for i in range(5)]
    kept, warnings = select_tracks(track_faces(frames), 5, 3, 0.0, 0.0, 2)
    assert sorted(round(t.mean_face_px) for t in kept) == [70, 80]
    assert any("analysed the 2 largest" in w for w in warnings)


def test_key_positions_cover_every_nth_frame_and_the_last():
    from preprocessor.tracking import key_positions

    assert key_positions(8, 4) == [0, 4, 7]
    assert key_positions(8, 1) == list(range(8))
    assert key_positions(3, 4) == [0, 2]
    assert key_positions(0, 4) == []


def test_faces_between_key_frames_are_interpolated_and_unmatched_ones_stay_put():
    from preprocessor.detectors.base import Face
    from preprocessor.tracking import fill_between_keyframes

    moving_a = Face(np.array([100, 100, 200, 200], np.float32), 0.9, np.zeros((5, 2), np.float32))
    moving_b = Face(np.array([140, 100, 240, 200], np.float32), 0.8, np.full((5, 2), 4, np.float32))
    lone = Face(np.array([500, 100, 560, 160], np.float32), 0.7)
    faces = fill_between_keyframes({0: [moving_a, lone], 4: [moving_b]}, 5)
    assert [len(f) for f in faces] == [2, 1, 1, 1, 1]
    np.testing.assert_allclose(faces[1][0].box, [110, 100, 210, 200])
    np.testing.assert_allclose(faces[3][0].landmarks, np.full((5, 2), 3))
    assert faces[2][0].score == pytest.approx(0.8)
    assert faces[4][0] is moving_b
