"""The analysis pipeline: one code path for the CLI, the preprocessor service and evaluation.

    probe -> sample -> detect -> crop -> track -> batch clips -> infer -> audio-visual -> aggregate

With a sync model (``sync_model``), the audio-visual step decodes the audio once and scores, per kept
track, whether its lips follow the voice over its sampled windows (preprocessor.audio_visual); aggregate
fuses that score with the visual one. Without a sync model, or for a file without audio, every track says
why it has no audio-visual score and its score is the visual one.

Faces are detected on every ``detect_every``-th frame of each window and interpolated in between
(see tracking.fill_between_keyframes): detection is the costliest stage after decoding.

``extract_faces`` runs the first half (video -> face tracks with crops), ``analyze`` the whole; with
``evidence=True`` it also keeps a small copy of each sampled frame and returns evidence images per track
(preprocessor/evidence.py), made from what is in memory anyway. Decoding,
detection and cropping run window by window, so only one window of full-resolution frames is ever in
memory; everything after cropping works on small face crops. Each stage's time is in ``timings_ms``.
Live streams (preprocessor/stream.py) run the same steps through ``detect_window`` and ``infer_clips``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from deepfake.contracts.metadata import CropPolicy, ModelMeta
from deepfake.contracts.schemas import DetectionResult, ModelInfo, VideoInfo
from inference.backend import InferenceBackend
from inference.onnx_backend import file_sha256
from inference.sync_backend import SyncBackend
from preprocessor.aggregate import ClipScore, aggregate, calibrate
from preprocessor.audio import decode_audio, log_mel, speech_frames
from preprocessor.audio_visual import AudioVisualResult, score_track
from preprocessor.cropping import crop_face
from preprocessor.detectors.base import Face, FaceDetector, create_detector
from preprocessor.errors import AudioError
from preprocessor.evidence import SmallFrame, attach_evidence, shrink_frame
from preprocessor.probe import probe_for
from preprocessor.sampling import FrameSampler, SampledFrame, plan_windows
from preprocessor.settings import PipelineSettings
from preprocessor.tracking import (
    Detection,
    FaceTrack,
    fill_between_keyframes,
    key_positions,
    select_tracks,
    track_faces,
)

Progress = Callable[[str, float], None]

# A result from fewer sampled frames than this says so: one or two frames give the model no motion to read
# and a single bad frame decides the verdict.
FEW_FRAMES = 3


@dataclass
class FaceExtraction:
    """What ``extract_faces`` returns: the kept face tracks, each Detection carrying its crop."""

    video: VideoInfo
    tracks: list[FaceTrack]
    sample_times: list[float]  # time of every sampled frame, by SampledFrame.index
    crop: CropPolicy
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # A small copy of each sampled frame by SampledFrame.index, kept only for evidence strips.
    small_frames: dict[int, SmallFrame] = field(default_factory=dict)


@dataclass
class Clip:
    """Crops of one track from one window, padded to the model's clip length by repeating the last."""

    track: int
    detections: list[int]
    crops: np.ndarray  # [T, S, S, 3] uint8


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[name]`` in milliseconds (stages can repeat)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        backend: InferenceBackend | None,
        detector: FaceDetector | None = None,
        crop: CropPolicy | None = None,
        clip_len: int | None = None,
        sync_model: SyncBackend | None = None,
    ) -> None:
        """``backend`` may be None only for ``extract_faces``: then ``crop`` and ``clip_len`` (the length of
        the sampling windows a model would be fed) stand in for a model's metadata, else the defaults.
        ``sync_model``: the audio-visual sync model; None: the audio-visual signal is off."""
        self.settings = settings
        self.backend = backend
        self.sync_model = sync_model
        self.detector = detector or create_detector(settings.detector, settings.weights_dir)
        if backend is not None:
            self.meta: ModelMeta = backend.meta
        else:
            self.meta = ModelMeta(crop=crop or CropPolicy())
            if clip_len is not None:
                self.meta = self.meta.model_copy(update={"clip_len": clip_len})
        self.crop = crop or self.meta.crop

    def analyze(
        self, path: Path, progress: Progress | None = None, evidence: bool = False
    ) -> DetectionResult:
        """Analyse one video; raises VideoError for inputs it refuses. ``evidence``: fill each track's
        ``evidence`` with images as data URIs (preprocessor/evidence.py)."""
        if self.backend is None:
            raise RuntimeError("Pipeline.analyze needs an InferenceBackend")
        start = time.perf_counter()
        faces = self.extract_faces(path, progress, keep_frames=evidence)
        timings = faces.timings_ms
        with stage(timings, "batch"):
            clips = make_clips(faces.tracks, self.meta.clip_len)
        with stage(timings, "infer"):
            scores = self.infer_clips(clips, progress)
        audio_visual = self.score_audio_visual(path, faces)
        with stage(timings, "aggregate"):
            answer = aggregate(
                faces.tracks,
                scores,
                faces.sample_times,
                self.meta.threshold,
                audio_visual,
                self.sync_model.meta
                if self.sync_model is not None and self.settings.fuse_audio_visual
                else None,
            )
        if evidence:
            with stage(timings, "evidence"):
                attach_evidence(answer.tracks, faces.tracks, scores, faces.small_frames)
        timings["total"] = (time.perf_counter() - start) * 1000
        if progress:
            progress("done", 1.0)
        return DetectionResult(
            path=str(path),
            verdict=answer.verdict,
            score=None if answer.score is None else round(answer.score, 4),
            threshold=answer.threshold,
            signals=answer.signals,
            tracks=answer.tracks,
            timeline=answer.timeline,
            video=faces.video,
            model=self._model_info(),
            sync_model=None if self.sync_model is None else self.sync_model.info,
            timings_ms={k: round(v, 1) for k, v in timings.items()},
            warnings=faces.warnings + answer.warnings,
            analyzed_at=datetime.now(UTC),
        )

    def score_audio_visual(self, path: Path, faces: FaceExtraction) -> list[AudioVisualResult] | None:
        """Per kept track, whether its lips follow the voice (None: no sync model, the signal is off). The
        audio is decoded once for all tracks (``timings_ms["audio"]``); each track is scored over its
        sampled windows, its crops with the sampler's frame times (``timings_ms["audio_visual"]``). Audio
        that cannot be decoded leaves every track without a score (``audio_error``) and says so."""
        if self.sync_model is None:
            return None
        if not faces.tracks:
            return []  # no face to hold the voice against: the audio is not decoded
        timings = faces.timings_ms
        with stage(timings, "audio"):
            try:
                audio = decode_audio(path, self.settings.max_duration_s) if faces.video.has_audio else None
            except AudioError as exc:
                faces.warnings.append(
                    f"the audio could not be decoded ({exc}); the verdict is the visual one"
                )
                return [AudioVisualResult(None, None, 0, AudioError.reason) for _ in faces.tracks]
            mel = None if audio is None else log_mel(audio)
            speech = None if audio is None else speech_frames(audio)  # once for all tracks
        if audio is not None:
            faces.warnings.extend(audio.warnings)
        with stage(timings, "audio_visual"):
            return [
                score_track(audio, mel, track_windows(track, faces.sample_times), self.sync_model, speech)
                for track in faces.tracks
            ]

    def _model_info(self) -> ModelInfo:
        """The backend's model identity plus the out-of-fold error rates at the threshold from the model's
        metadata (MODEL_CARD.md), which let a reader tell what a verdict at this threshold is worth."""
        assert self.backend is not None
        overall = self.meta.metrics.get("all", {}) if isinstance(self.meta.metrics, dict) else {}
        rates = {
            key: round(float(overall[key]), 3)
            for key in ("reals_called_fake", "fakes_caught")
            if isinstance(overall, dict) and isinstance(overall.get(key), int | float)
        }
        return self.backend.info.model_copy(update=rates)

    def extract_faces(
        self, path: Path, progress: Progress | None = None, keep_frames: bool = False
    ) -> FaceExtraction:
        """Video -> kept face tracks, every detection with its crop (the model's crop policy);
        ``keep_frames``: also a small copy of every sampled frame (evidence strips)."""
        s = self.settings
        timings: dict[str, float] = {}
        warnings: list[str] = []
        with stage(timings, "probe"):
            probed = probe_for(path, s)
            # Read once more, not decoded: a report must name exactly which file it is about.
            sha256 = file_sha256(Path(path))
        info = probed.info
        plan = plan_windows(info.duration_s, info.fps, s.frames, self.meta.clip_len, s.frame_stride)
        sampler = FrameSampler(probed, plan, threads=s.threads)
        per_frame: list[list[Detection]] = []
        sample_times: list[float] = []
        tiny = 0
        small_frames: dict[int, SmallFrame] = {}
        windows = sampler.windows()
        while True:
            with stage(timings, "decode"):
                window = next(windows, None)
            if window is None:
                break
            detections, ignored = self.detect_window(window, timings)
            tiny += ignored
            per_frame.extend(detections)
            sample_times.extend(frame.t for frame in window)
            if keep_frames:
                with stage(timings, "evidence"):
                    for frame in window:
                        small_frames[frame.index] = shrink_frame(frame.rgb)
            del window  # only one window of full frames at a time
            if progress:
                progress("detect", len(sample_times) / max(1, len(plan.starts) * plan.clip_len))
        warnings.extend(probed.warnings)
        warnings.extend(sampler.warnings)
        if 0 < len(sample_times) < FEW_FRAMES:
            warnings.append(
                f"only {len(sample_times)} frame(s) could be sampled (the video is that short, or decoding "
                "stopped); a verdict from so few frames is unreliable"
            )
        if tiny:
            warnings.append(f"ignored {tiny} face detection(s) smaller than {s.min_face_px:.0f} px")
        with stage(timings, "track"):
            tracks, track_warnings = select_tracks(
                track_faces(per_frame),
                len(sample_times),
                s.min_track_frames,
                s.verdict_min_face_px,
                s.verdict_min_coverage,
                s.max_tracks,
            )
        warnings.extend(track_warnings)
        video = info.model_copy(update={"frames_sampled": len(sample_times), "sha256": sha256})
        return FaceExtraction(video, tracks, sample_times, self.crop, warnings, timings, small_frames)

    def detect_window(
        self, window: list[SampledFrame], timings: dict[str, float]
    ) -> tuple[list[list[Detection]], int]:
        """Faces with their crops for every frame of ``window`` (consecutive sampled frames): the detector
        runs on every ``detect_every``-th frame and the last, boxes are interpolated between. Returns (per
        frame detections, detections ignored as smaller than ``min_face_px``). Files and live streams
        (preprocessor/stream.py) both detect through here."""
        s = self.settings
        key_faces = {}
        tiny = 0
        for position in key_positions(len(window), s.detect_every):
            with stage(timings, "detect"):
                faces = self._detect(window[position].rgb)
            key_faces[position] = [f for f in faces if _side(f.box) >= s.min_face_px]
            tiny += len(faces) - len(key_faces[position])
        with stage(timings, "detect"):
            window_faces = fill_between_keyframes(key_faces, len(window))
        per_frame = []
        for frame, faces in zip(window, window_faces, strict=True):
            with stage(timings, "crop"):
                per_frame.append([self._detection(frame, f) for f in faces])
        return per_frame, tiny

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in full-resolution coordinates, found on a copy no larger than ``detect_max_side``."""
        height, width = rgb.shape[:2]
        scale = min(1.0, self.settings.detect_max_side / max(height, width))
        if scale >= 1.0:
            return self.detector.detect(rgb)
        small = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        faces = self.detector.detect(small)
        for face in faces:
            face.box = np.asarray(face.box, dtype=np.float32) / scale
            if face.landmarks is not None:
                face.landmarks = np.asarray(face.landmarks, dtype=np.float32) / scale
            if getattr(face, "keypoints", None) is not None:
                face.keypoints = np.asarray(face.keypoints, dtype=np.float32) / scale
        return faces

    def _detection(self, frame: SampledFrame, face: Face) -> Detection:
        return Detection(
            sample=frame.index,
            frame_index=frame.frame_index,
            t=frame.t,
            window=frame.window,
            box=np.asarray(face.box, dtype=np.float32),
            score=float(face.score),
            landmarks=face.landmarks,
            crop=crop_face(frame.rgb, face.box, self.crop),
        )

    def infer_clips(self, clips: list[Clip], progress: Progress | None = None) -> list[ClipScore]:
        """Run clips through the backend in batches of equal T; calibrate with the model's temperature."""
        assert self.backend is not None
        results: list[ClipScore] = []
        size = self.settings.batch_size
        for start in range(0, len(clips), size):
            batch = clips[start : start + size]
            out = self.backend.infer(np.stack([c.crops for c in batch]))
            clip_p = calibrate(out.clip_logits, self.meta.temperature)
            frame_p = calibrate(out.frame_logits, self.meta.temperature)
            for i, clip in enumerate(batch):
                n = len(clip.detections)
                blend = None if out.blend_maps is None else out.blend_maps[i, :n]
                results.append(
                    ClipScore(
                        clip.track,
                        clip.detections,
                        float(clip_p[i]),
                        frame_p[i, :n].tolist(),
                        blend,
                        logit=float(out.clip_logits[i]),
                    )
                )
            if progress:
                progress("infer", min(1.0, (start + len(batch)) / len(clips)))
        return results


def make_clips(tracks: list[FaceTrack], clip_len: int) -> list[Clip]:
    """One clip per (track, window): the track's crops in that window, cut to ``clip_len`` and padded to it
    by repeating the last crop, so every clip in a batch has the same T."""
    clips: list[Clip] = []
    for ti, track in enumerate(tracks):
        by_window: dict[int, list[int]] = {}
        for di, det in enumerate(track.detections):
            by_window.setdefault(det.window, []).append(di)
        for indices in by_window.values():
            for start in range(0, len(indices), clip_len):
                part = indices[start : start + clip_len]
                clips.append(Clip(ti, part, pad_clip([track.detections[d].crop for d in part], clip_len)))
    return clips


def track_windows(track: FaceTrack, sample_times: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The track's crops per sampling window with their frame times from the sampler: [(crops [T, S, S, 3]
    uint8, times [T] s)], what the sync model aligns the audio to."""
    by_window: dict[int, list[Detection]] = {}
    for det in track.detections:
        by_window.setdefault(det.window, []).append(det)
    return [
        (
            pad_clip([d.crop for d in dets], len(dets)),
            np.array([sample_times[d.sample] for d in dets], dtype=np.float64),
        )
        for dets in by_window.values()
    ]


def pad_clip(crops: list[np.ndarray | None], clip_len: int) -> np.ndarray:
    """[clip_len, S, S, 3]: the crops padded by repeating the last, so every clip in a batch has one T.
    Every detection of the pipeline carries its crop (``Detection.crop`` is optional only for tracking)."""
    kept = [c for c in crops if c is not None]
    if len(kept) != len(crops) or not kept:
        raise ValueError("every detection in a clip needs its crop")
    return np.stack(kept + [kept[-1]] * (clip_len - len(kept)))


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))
