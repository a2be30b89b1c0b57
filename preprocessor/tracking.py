"""Follow faces across the sampled frames: one track per person.

Why greedy association is enough: samples are dense inside a clip window (a few frames apart) and the
scene rarely holds more than a handful of faces. Within a window a face moves little, so box overlap
(IoU) decides; between windows (seconds apart) people move, so a looser centre-distance rule applies,
relative to face size. Pairs are matched best-first and a track takes at most one face per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from preprocessor.detectors.base import Face
from preprocessor.detectors.common import iou_one_to_many

IOU_MATCH = 0.3  # overlap at which two boxes are surely the same face
SAME_WINDOW_DIST = 0.6  # max centre distance / face size between frames of one clip window
OTHER_WINDOW_DIST = 1.5  # ... between windows, seconds apart
MAX_SIZE_RATIO = 2.0  # a face does not change size more than this between samples


@dataclass
class Detection:
    """One face in one sampled frame, in full-resolution display pixels, with its crop."""

    sample: int  # SampledFrame.index
    frame_index: int
    t: float
    window: int
    box: np.ndarray  # [4] float32 x1, y1, x2, y2
    score: float
    landmarks: np.ndarray | None = None
    crop: np.ndarray | None = None  # [size, size, 3] uint8 (crop policy of the model)

    @property
    def side(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class FaceTrack:
    id: int
    detections: list[Detection] = field(default_factory=list)
    used_for_verdict: bool = False

    @property
    def mean_face_px(self) -> float:
        return float(np.mean([d.side for d in self.detections]))

    @property
    def start_s(self) -> float:
        return self.detections[0].t

    @property
    def end_s(self) -> float:
        return self.detections[-1].t


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x1y1x2y2 boxes (the detectors' one IoU, for a single pair)."""
    return float(iou_one_to_many(np.asarray(a), np.asarray(b)[None])[0])


def box_match(a: np.ndarray, b: np.ndarray, same_window: bool = True) -> float:
    """How likely boxes ``a`` then ``b`` show the same face: > 1 overlapping, (0, 1) near, 0 no match."""
    side_a = float(max(a[2] - a[0], a[3] - a[1]))
    side_b = float(max(b[2] - b[0], b[3] - b[1]))
    if max(side_a, side_b) / max(min(side_a, side_b), 1e-6) > MAX_SIZE_RATIO:
        return 0.0
    iou = box_iou(a, b)
    if iou >= IOU_MATCH:
        return 1.0 + iou
    dist = float(np.linalg.norm((a[:2] + a[2:4]) / 2 - (b[:2] + b[2:4]) / 2)) / ((side_a + side_b) / 2)
    limit = SAME_WINDOW_DIST if same_window else OTHER_WINDOW_DIST
    return 1.0 - dist / limit if dist < limit else 0.0


def match_score(last: Detection, det: Detection) -> float:
    """How well ``det`` continues a track whose latest face is ``last``; 0 means no match."""
    return box_match(last.box, det.box, last.window == det.window)


def greedy_pairs(scores: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs with positive score, best first, each row and column used once."""
    order = (
        np.dstack(np.unravel_index(np.argsort(-scores, axis=None), scores.shape))[0] if scores.size else []
    )
    rows: set[int] = set()
    cols: set[int] = set()
    pairs = []
    for r, c in order:
        if scores[r, c] <= 0:
            break
        if r not in rows and c not in cols:
            pairs.append((int(r), int(c)))
            rows.add(int(r))
            cols.add(int(c))
    return pairs


def fill_between_keyframes(key_faces: dict[int, list[Face]], n_frames: int) -> list[list[Face]]:
    """Faces for every frame of a window from detections on some of its frames (``key_faces``: frame
    position -> faces). A face found on two consecutive key frames is placed on the frames between by
    linear interpolation of its box (and landmarks); a face found on one key frame only stays there.

    Why: inside a window frames are a few hundredths of a second apart and a face moves smoothly, so
    running the detector on every frame would mostly re-measure the same box; it is the costliest stage.
    """
    out: list[list[Face]] = [[] for _ in range(n_frames)]
    keys = sorted(key_faces)
    for k in keys:
        out[k] = list(key_faces[k])
    for a, b in zip(keys, keys[1:], strict=False):
        faces_a, faces_b = key_faces[a], key_faces[b]
        scores = np.array([[box_match(fa.box, fb.box) for fb in faces_b] for fa in faces_a]).reshape(
            len(faces_a), len(faces_b)
        )
        for ia, ib in greedy_pairs(scores):
            fa, fb = faces_a[ia], faces_b[ib]
            for k in range(a + 1, b):
                u = (k - a) / (b - a)
                landmarks = None
                if fa.landmarks is not None and fb.landmarks is not None:
                    landmarks = ((1 - u) * fa.landmarks + u * fb.landmarks).astype(np.float32)
                box = ((1 - u) * np.asarray(fa.box) + u * np.asarray(fb.box)).astype(np.float32)
                out[k].append(Face(box=box, score=min(fa.score, fb.score), landmarks=landmarks))
    return out


def key_positions(n_frames: int, every: int) -> list[int]:
    """Which frames of a window the detector runs on: every ``every``-th one and the last."""
    return sorted(set(range(0, n_frames, max(1, every))) | ({n_frames - 1} if n_frames else set()))


class Tracker:
    """Incremental face association: feed the detections of one sampled frame at a time.

    Why a class: a file's analysis feeds every frame at once (:func:`track_faces`), a live stream feeds
    frames as they arrive and must keep tracks alive across windows for as long as it runs. Both use this
    one matching rule. Only each track's latest detection is read, so a caller may trim older detections
    (and remove ended tracks from ``tracks``) to bound memory; ids keep counting up.
    """

    def __init__(self) -> None:
        self.tracks: list[FaceTrack] = []
        self._next_id = 0

    def add(self, detections: list[Detection]) -> list[FaceTrack]:
        """Append each detection to the track it continues best (or a new track); returns, per detection,
        the track it joined."""
        tracks = self.tracks
        pairs = sorted(
            (
                (match_score(track.detections[-1], det), ti, di)
                for ti, track in enumerate(tracks)
                for di, det in enumerate(detections)
            ),
            reverse=True,
        )
        joined: dict[int, FaceTrack] = {}
        used_tracks: set[int] = set()
        for score, ti, di in pairs:
            if score <= 0:
                break
            if ti in used_tracks or di in joined:
                continue
            tracks[ti].detections.append(detections[di])
            used_tracks.add(ti)
            joined[di] = tracks[ti]
        for di, det in enumerate(detections):
            if di not in joined:
                joined[di] = FaceTrack(id=self._next_id, detections=[det])
                self._next_id += 1
                tracks.append(joined[di])
        return [joined[di] for di in range(len(detections))]


def track_faces(frames: list[list[Detection]]) -> list[FaceTrack]:
    """Group per-frame detections (in sampling order) into tracks, ordered by first appearance."""
    tracker = Tracker()
    for detections in frames:
        tracker.add(detections)
    return tracker.tracks


def decides(
    mean_face_px: float, coverage: float, verdict_min_face_px: float, verdict_min_coverage: float
) -> bool:
    """Whether a track decides the verdict: its face is large enough for the model to see detail and it is
    present in enough of the sampled frames (``coverage``: share of them)."""
    return mean_face_px >= verdict_min_face_px and coverage >= verdict_min_coverage


def none_decides_warning(verdict_min_face_px: float, verdict_min_coverage: float) -> str:
    """Said when no face passes :func:`decides` and all of them decide instead."""
    return (
        f"every face is small (under {verdict_min_face_px:.0f} px) or brief (in under "
        f"{verdict_min_coverage:.0%} of sampled frames); the verdict rests on them and is less reliable"
    )


def select_tracks(
    tracks: list[FaceTrack],
    n_sampled: int,
    min_track_frames: int,
    verdict_min_face_px: float,
    verdict_min_coverage: float,
    max_tracks: int,
) -> tuple[list[FaceTrack], list[str]]:
    """Drop short-lived tracks, keep the ``max_tracks`` largest, and mark which ones decide the verdict.

    A track decides (``used_for_verdict``) when its face is large enough for the model to see detail
    and it is present in enough of the sampled frames; if none qualifies, all kept tracks decide, with a
    warning, rather than answering nothing. Returns (kept tracks renumbered 0.., warnings).
    """
    warnings: list[str] = []
    need = min(min_track_frames, n_sampled)
    kept = [t for t in tracks if len(t.detections) >= need]
    if len(kept) < len(tracks):
        warnings.append(
            f"ignored {len(tracks) - len(kept)} face track(s) seen in fewer than {need} sampled frames "
            "(passers-by or false detections)"
        )
    if len(kept) > max_tracks:
        kept.sort(key=lambda t: t.mean_face_px * len(t.detections), reverse=True)
        warnings.append(f"{len(kept)} faces found; analysed the {max_tracks} largest")
        kept = kept[:max_tracks]
    kept.sort(key=lambda t: (t.start_s, t.detections[0].box[0]))
    for new_id, track in enumerate(kept):
        track.id = new_id
        track.used_for_verdict = decides(
            track.mean_face_px, len(track.detections) / n_sampled, verdict_min_face_px, verdict_min_coverage
        )
    if kept and not any(t.used_for_verdict for t in kept):
        warnings.append(none_decides_warning(verdict_min_face_px, verdict_min_coverage))
        for track in kept:
            track.used_for_verdict = True
    return kept, warnings
