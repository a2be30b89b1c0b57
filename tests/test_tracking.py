"""Tracking with constructed boxes: one track per person, short and small ones handled with reasons."""

from __future__ import annotations

import numpy as np

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
