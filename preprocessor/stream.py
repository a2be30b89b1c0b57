"""Live streams: rolling scores for frames as they arrive, from the same detector, tracker, crops and model.

    push(frame) -> [every frame_stride-th] queue -> chunk of stream_hop frames -> detect (Pipeline) ->
    track (Tracker, alive across windows) -> each track's last clip_len crops -> model -> StreamResult

Why this shape:
- A file is sampled in a few windows spread over it; a stream has no end to spread over, so every
  ``frame_stride``-th frame received is analysed and each face's latest ``clip_len`` crops are scored every
  ``stream_hop`` analysed frames. With a hop smaller than the clip length windows overlap: a frame waits at
  most one hop (not one clip) for a score, and every scored clip is a full clip of consecutive frames like
  the ones ``deepfake detect`` scores.
- Frames are analysed on one worker thread behind a bounded queue. When the queue is full a new frame is
  dropped and counted instead of queued, so results never fall further behind than the queue (a caller
  reading a file as fast as possible may block instead: ``push(block=True)``).
- Memory is bounded whatever the stream's length: at most ``stream_queue_frames + stream_hop`` full frames,
  ``clip_len`` crops per live track, at most ``max_tracks`` tracks scored; a track unseen for
  ``stream_track_ttl_s`` ends and keeps only its running totals (at most ``MAX_ENDED_TRACKS`` of them);
  with a sync model also the AUDIO_BUFFER_S audio ring and AV_WINDOWS mouth windows per live track.
- Per track the result carries the latest clip score, a smoothed score (exponential moving average of the
  clip logits, calibrated like any logit) and the running verdict of the smoothed score at the model's
  calibrated threshold. The final summary scores each track by the mean of all its clip scores and the
  stream by the highest deciding track: the rules of preprocessor/aggregate.py.

The audio-visual signal (with a sync model, ``pipeline.sync_model``; README "Live streams"): audio pushed
with ``push_audio`` (float32 mono at SAMPLE_RATE with its stream time) goes into an AudioRing of
AUDIO_BUFFER_S seconds. Each track keeps the mouth crops and frame times of its last AV_WINDOWS scored
windows that do not overlap (mouth crops, not face crops: 48x96 gray is 1/17 of a 160 px RGB face
crop) and every AV_EVERY_S stream seconds (not every hop: the sync model scores each window at 51
offsets) is scored by preprocessor/audio_visual.py's rule over those of them whose audio, +-1 s of
offsets included, has arrived. The rolling result carries the latest such score per track; the final
summary the mean of a track's scores. A stream with no audio (JPEG/PNG frames, a container without an
audio stream) says ``no_audio`` and costs nothing more: its visual scores are exactly those without a
sync model.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deepfake.contracts.schemas import (
    AudioVisualScore,
    StreamFinalTrack,
    StreamResult,
    StreamSummary,
    StreamTrack,
)
from preprocessor.aggregate import calibrate, verdict_for
from preprocessor.audio import log_mel, speech_fraction_of, speech_frames
from preprocessor.audio_ring import AudioRing
from preprocessor.audio_visual import (
    MIN_WINDOW_FRAMES,
    OFFSETS_S,
    AudioVisualResult,
    score_mouths,
    window_span,
)
from preprocessor.mouth import mouth_crops
from preprocessor.pipeline import Clip, Pipeline, pad_clip, stage
from preprocessor.sampling import SampledFrame
from preprocessor.tracking import Detection, FaceTrack, Tracker, decides, none_decides_warning

# Ended tracks whose totals the final summary keeps; beyond it those with the fewest windows are forgotten.
MAX_ENDED_TRACKS = 256
# The audio-visual signal: windows kept per track, stream seconds between a track's scorings, and the
# audio kept: AV_WINDOWS windows of about 0.64 s (8 frames every 2nd at 25 fps), the +-1 s offset search
# on both sides, the wait for the audio after the newest window, and room for a gap between windows.
AV_WINDOWS = 4
AV_EVERY_S = 1.0
AUDIO_BUFFER_S = 8.0

ResultCallback = Callable[[StreamResult], object]  # return values are ignored
ErrorCallback = Callable[[BaseException], object]


class StreamClosedError(Exception):
    """A frame was pushed after ``finish``/``close``, or after the analysis failed."""


@dataclass
class _Arrived:
    frame: SampledFrame
    arrival: float  # time.perf_counter() when the frame arrived


@dataclass
class _MouthWindow:
    mouths: np.ndarray  # [T, 48, 96] uint8
    times: np.ndarray  # [T] stream seconds
    scored: bool = False  # counted in the track's windows_scored


@dataclass
class _TrackState:
    """Running totals of one face: enough for its live line and its final score, never its history."""

    id: int
    first_t: float
    last_t: float
    last_box: np.ndarray
    detections: int = 0
    face_px_sum: float = 0.0
    unscored: int = 0  # detections since its last scored window
    windows: int = 0
    score_sum: float = 0.0
    last_score: float = 0.0
    logit_ema: float = 0.0
    window_span: tuple[float, float] = (0.0, 0.0)
    # The audio-visual signal: the last AV_WINDOWS non-overlapping windows (mouth crops [T, 48, 96], frame
    # times [T]) with whether each was part of a scored result; the latest result and the running mean.
    av_windows: deque[_MouthWindow] | None = None
    av_next_t: float = -math.inf
    av: AudioVisualResult | None = None
    av_sum: float = 0.0
    av_scores: int = 0
    av_windows_scored: int = 0
    av_offset_s: float | None = None

    def seen(self, det: Detection) -> None:
        self.detections += 1
        self.unscored += 1
        self.face_px_sum += det.side
        self.last_t = det.t
        self.last_box = det.box

    @property
    def mean_face_px(self) -> float:
        return self.face_px_sum / max(1, self.detections)


class StreamSession:
    """One live stream. ``push`` frames (RGB + stream time) from any thread; results arrive through
    ``on_result`` on the session's worker thread; ``finish`` drains and returns the StreamSummary,
    ``close`` stops at once (a client that went away). A failure in the analysis (e.g. the inference
    server unreachable) stops the session and is passed to ``on_error``, then raised by ``finish``."""

    def __init__(
        self,
        pipeline: Pipeline,
        on_result: ResultCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if pipeline.backend is None:
            raise ValueError("a stream session needs a Pipeline with an InferenceBackend")
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.meta = pipeline.meta
        self._on_result = on_result
        self._on_error = on_error
        self.tracker = Tracker()
        self._states: dict[int, _TrackState] = {}
        self._ended: list[_TrackState] = []
        self._chunk: list[_Arrived] = []
        self._queue: deque[_Arrived] = deque()
        self._cond = threading.Condition()
        self._finishing = False
        self._closed = False
        self.error: BaseException | None = None
        self.frames_received = 0
        self.frames_analysed = 0
        self.frames_dropped = 0
        self.windows = 0
        self.tiny = 0
        self.last_t = 0.0
        self._segment = 0  # the Detection.window of analysed frames; a new one after a drop (a gap)
        self.timings: dict[str, float] = {}
        self.sync_model = pipeline.sync_model
        self.audio = AudioRing(AUDIO_BUFFER_S)  # stays empty without a sync model or without audio
        self.audio_error: str | None = None  # why the source's audio broke (audio_failed)
        self._worker = threading.Thread(target=self._run, name="stream-session", daemon=True)
        self._worker.start()

    # ---- the producer's side -------------------------------------------------------------------------

    def wants_next(self) -> bool:
        """Whether the next frame pushed will be analysed (the others are only counted)."""
        return self.frames_received % self.settings.frame_stride == 0

    def needs_pixels(self, block: bool = False) -> bool:
        """Whether the next frame pushed needs its pixels: it will be analysed and, unless the caller will
        wait for room (``block``), there is room for it. A caller skips converting or decoding the others,
        so a frame that is dropped costs no decoding."""
        return self.wants_next() and (block or len(self._queue) < self.settings.stream_queue_frames)

    def push(
        self, rgb: np.ndarray | None, t: float, arrival: float | None = None, block: bool = False
    ) -> bool:
        """Offer the next frame (``rgb`` [H, W, 3] uint8, ``t`` stream seconds). Returns False when it is
        dropped because the queue is full (``block=True`` waits for room instead). ``rgb`` may be None when
        ``needs_pixels`` said so: a frame not analysed, or (not blocking) one that is dropped."""
        arrival = time.perf_counter() if arrival is None else arrival
        analysed = self.wants_next()
        with self._cond:
            if self._finishing or self._closed or self.error is not None:
                raise StreamClosedError("the stream session has ended")
            if analysed and block and rgb is None:
                raise ValueError("this frame is analysed (needs_pixels() was True): pass its pixels")
            index = self.frames_received
            self.frames_received += 1
            self.last_t = t
            if not analysed:
                return True
            limit = self.settings.stream_queue_frames
            while block and len(self._queue) >= limit and not self._closed and self.error is None:
                self._cond.wait(0.1)
            if rgb is None or len(self._queue) >= limit:
                self.frames_dropped += 1
                self._segment += 1
                return False
            frame = SampledFrame(index=-1, frame_index=index, t=t, window=self._segment, rgb=rgb)
            self._queue.append(_Arrived(frame, arrival))
            self._cond.notify_all()
            return True

    @property
    def wants_audio(self) -> bool:
        """Whether audio pushed is used (there is a sync model); a source skips decoding it otherwise."""
        return self.sync_model is not None

    def push_audio(self, samples: np.ndarray, t: float) -> None:
        """Offer the next audio (float32 mono at preprocessor.audio.SAMPLE_RATE, starting at stream time
        ``t`` on the frames' timeline). Never dropped and never blocking: the ring keeps the latest
        AUDIO_BUFFER_S seconds. Ignored without a sync model."""
        if self._finishing or self._closed or self.error is not None:
            raise StreamClosedError("the stream session has ended")
        if self.sync_model is not None:
            self.audio.push(samples, t)

    def audio_failed(self, message: str) -> None:
        """The source's audio broke (the video goes on): the summary warns, and faces without audio to
        score say ``audio_error`` instead of ``no_audio``, as for a file."""
        self.audio_error = message

    def finish(self, timeout_s: float | None = None) -> StreamSummary:
        """No more frames: analyse what is queued, score every face's unscored tail, return the summary."""
        with self._cond:
            self._finishing = True
            self._cond.notify_all()
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            self.close()
            raise TimeoutError("the stream analysis did not finish in time")
        if self.error is not None:
            raise self.error
        return self.summary()

    def close(self) -> None:
        """Stop now, dropping what is queued (the client went away); returns once the worker has ended."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    @property
    def running(self) -> bool:
        return self._worker.is_alive()

    # ---- the worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not (self._finishing or self._closed):
                        self._cond.wait()
                    if self._closed:
                        return
                    if not self._queue:  # finishing and drained
                        break
                    item = self._queue.popleft()
                    self._cond.notify_all()  # a blocked producer may go on
                self._chunk.append(item)
                if len(self._chunk) >= self.settings.stream_hop:
                    self._analyse_chunk(final=False)
            self._analyse_chunk(final=True)
        except BaseException as exc:  # the session must end visibly, never die silently on its thread
            with self._cond:
                self.error = exc
                self._queue.clear()
                self._cond.notify_all()
            if self._on_error is not None:
                self._on_error(exc)

    def _analyse_chunk(self, final: bool) -> None:
        chunk, self._chunk = self._chunk, []
        frames = [item.frame for item in chunk]
        for frame in frames:
            frame.index = self.frames_analysed
            self.frames_analysed += 1
        seen: set[int] = set()
        if frames:
            per_frame, tiny = self.pipeline.detect_window(frames, self.timings)
            self.tiny += tiny
            with stage(self.timings, "track"):
                for detections in per_frame:
                    for det, track in zip(detections, self.tracker.add(detections), strict=True):
                        self._state(track, det).seen(det)
                        del track.detections[: -self.meta.clip_len]  # only the latest clip is kept
                        seen.add(track.id)
            self._end_tracks(frames[-1].t)
        scored = self._score(seen, final)
        if self.sync_model is not None and (frames or final):
            with stage(self.timings, "audio_visual"):
                self._score_audio_visual(frames[-1].t if frames else self.last_t, final)
        if frames and (scored or not final):
            self._emit(frames[-1].t, chunk[-1].arrival)

    def _state(self, track: FaceTrack, det: Detection) -> _TrackState:
        state = self._states.get(track.id)
        if state is None:
            state = _TrackState(id=track.id, first_t=det.t, last_t=det.t, last_box=det.box)
            self._states[track.id] = state
        return state

    def _end_tracks(self, now_t: float) -> None:
        """Tracks unseen for stream_track_ttl_s leave the tracker; their totals stay for the summary."""
        ttl = self.settings.stream_track_ttl_s
        ended = [t for t in self.tracker.tracks if now_t - t.detections[-1].t > ttl]
        for track in ended:
            self.tracker.tracks.remove(track)
            state = self._states.pop(track.id)
            state.av_windows = None  # an ended track keeps its audio-visual totals, not its crops
            if state.windows:
                self._ended.append(state)
        if len(self._ended) > MAX_ENDED_TRACKS:
            self._ended.sort(key=lambda s: s.windows, reverse=True)
            del self._ended[MAX_ENDED_TRACKS:]

    def _score(self, seen: set[int], final: bool) -> int:
        """Score the latest clip of each face seen in this chunk that has a full clip (at the end: any
        unscored tail of at least min_track_frames, padded as make_clips pads); returns clips scored."""
        clip_len = self.meta.clip_len
        candidates = []
        for track in self.tracker.tracks:
            state = self._states[track.id]
            if final:
                ready = state.unscored >= min(self.settings.min_track_frames, clip_len)
            else:
                ready = track.id in seen and len(track.detections) >= clip_len
            if ready and state.unscored > 0:
                candidates.append(track)
        candidates.sort(key=lambda t: self._states[t.id].mean_face_px, reverse=True)
        candidates = candidates[: self.settings.max_tracks]
        if not candidates:
            return 0
        clips = []
        for ti, track in enumerate(candidates):
            dets = track.detections[-clip_len:]  # the latest clip (fewer only for a face seen briefly)
            clips.append(Clip(ti, list(range(len(dets))), pad_clip([d.crop for d in dets], clip_len)))
            self._states[track.id].window_span = (dets[0].t, dets[-1].t)
            if self.sync_model is not None:
                self._keep_mouths(self._states[track.id], dets)
        with stage(self.timings, "infer"):
            scores = self.pipeline.infer_clips(clips)
        alpha = self.settings.stream_ema_alpha
        for clip_score in scores:
            state = self._states[candidates[clip_score.track].id]
            state.logit_ema = (
                clip_score.logit
                if state.windows == 0
                else alpha * clip_score.logit + (1 - alpha) * state.logit_ema
            )
            state.windows += 1
            state.score_sum += clip_score.score
            state.last_score = clip_score.score
            state.unscored = 0
        self.windows += len(scores)
        return len(scores)

    def _keep_mouths(self, state: _TrackState, dets: list[Detection]) -> None:
        """Keep this scored window's mouth crops for the audio-visual signal, unless it overlaps the last
        one kept (with a hop under clip_len the scored windows overlap; the kept ones follow each other)."""
        if state.av_windows is None:
            state.av_windows = deque(maxlen=AV_WINDOWS)
        crops = [d.crop for d in dets if d.crop is not None]
        times = np.array([d.t for d in dets if d.crop is not None], np.float64)
        if len(crops) < MIN_WINDOW_FRAMES:
            return
        if state.av_windows and times[0] <= state.av_windows[-1].times[-1]:
            return
        state.av_windows.append(_MouthWindow(mouth_crops(np.stack(crops)), times))

    def _score_audio_visual(self, now_t: float, final: bool) -> None:
        """Score the tracks whose turn it is (every AV_EVERY_S stream seconds; all at the end) over their
        kept windows whose audio, the offset search included, has arrived (at the end: what there is)."""
        assert self.sync_model is not None
        due = [
            st
            for st in self._states.values()
            if st.windows and st.av_windows is not None and (final or now_t >= st.av_next_t)
        ]
        if not due:
            return
        audio = self.audio.snapshot()
        mel = speech = None
        if audio is not None:
            mel = log_mel(audio)
            speech = speech_frames(audio)
        offsets = self.sync_model.meta.offsets_s or OFFSETS_S
        reach = max(abs(o) for o in offsets)
        for state in due:
            state.av_next_t = now_t + AV_EVERY_S
            assert state.av_windows is not None
            ready = [
                w
                for w in state.av_windows
                if final or audio is None or window_span(w.times)[1] + reach <= audio.end_s + 1e-6
            ]
            if audio is None:
                result = AudioVisualResult(None, None, 0, self._no_audio_reason())
            elif not ready:
                result = AudioVisualResult(None, None, 0, "too_few_windows")
            else:
                windows = [(w.mouths, w.times) for w in ready]
                result = score_mouths(audio, mel, windows, self.sync_model)
            state.av = result
            if result.score is None:
                continue
            state.av_sum += result.score
            state.av_scores += 1
            state.av_offset_s = result.offset_s
            assert speech is not None
            min_speech = self.sync_model.meta.min_speech_fraction
            for w in ready:  # the windows the score heard speech in count once each
                if not w.scored and speech_fraction_of(*speech, *window_span(w.times)) >= min_speech:
                    w.scored = True
                    state.av_windows_scored += 1

    def _no_audio_reason(self) -> str:
        """Why a face has no audio to score: the source's audio broke (``audio_error``) or it has none."""
        return "no_audio" if self.audio_error is None else "audio_error"

    def _audio_visual(self, state: _TrackState, final: bool) -> AudioVisualScore | None:
        """A track's audio-visual entry: the latest result (rolling) or the mean of its scores (final);
        None without a sync model (the signal is off)."""
        if self.sync_model is None:
            return None
        av = state.av or AudioVisualResult(
            None, None, 0, self._no_audio_reason() if self.audio.end_s is None else "too_few_windows"
        )
        if not final or not state.av_scores:
            return AudioVisualScore(
                score=None if av.score is None else round(av.score, 4),
                offset_s=av.offset_s,
                windows_scored=av.windows_scored,
                reason=av.reason,
            )
        return AudioVisualScore(
            score=round(state.av_sum / state.av_scores, 4),
            offset_s=state.av_offset_s,
            windows_scored=state.av_windows_scored,
            reason="scored",
        )

    def _emit(self, t: float, arrival: float) -> None:
        threshold = self.meta.threshold
        tracks = []
        for state in sorted(self._states.values(), key=lambda s: s.id):
            if not state.windows:
                continue
            smoothed = float(calibrate(state.logit_ema, self.meta.temperature))
            tracks.append(
                StreamTrack(
                    id=state.id,
                    score=round(state.last_score, 4),
                    smoothed=round(smoothed, 4),
                    verdict=verdict_for(smoothed, threshold),
                    box=[round(float(v), 1) for v in state.last_box[:4]],
                    windows=state.windows,
                    window=[round(state.window_span[0], 3), round(state.window_span[1], 3)],
                    audio_visual=self._audio_visual(state, final=False),
                )
            )
        result = StreamResult(
            t=round(t, 3),
            latency_ms=round((time.perf_counter() - arrival) * 1000, 1),
            frames_received=self.frames_received,
            frames_dropped=self.frames_dropped,
            tracks=tracks,
        )
        if self._on_result is not None:
            self._on_result(result)

    # ---- the end ---------------------------------------------------------------------------------------

    def summary(self) -> StreamSummary:
        """Per face the mean of its clip scores; the stream's score is the highest among deciding faces
        (large enough, present in enough analysed frames: tracking.decides), as for a file."""
        s = self.settings
        states = [st for st in [*self._ended, *self._states.values()] if st.windows]
        states.sort(key=lambda st: (st.first_t, st.id))
        warnings: list[str] = []
        n = max(1, self.frames_analysed)
        deciding = {
            st.id: decides(st.mean_face_px, st.detections / n, s.verdict_min_face_px, s.verdict_min_coverage)
            for st in states
        }
        if states and not any(deciding.values()):
            warnings.append(none_decides_warning(s.verdict_min_face_px, s.verdict_min_coverage))
            deciding = dict.fromkeys(deciding, True)
        tracks = [
            StreamFinalTrack(
                id=st.id,
                score=round(st.score_sum / st.windows, 4),
                verdict=verdict_for(st.score_sum / st.windows, self.meta.threshold),
                windows=st.windows,
                start_s=round(st.first_t, 3),
                end_s=round(st.last_t, 3),
                mean_face_px=round(st.mean_face_px, 1),
                used_for_verdict=deciding[st.id],
                audio_visual=self._audio_visual(st, final=True),
            )
            for st in states
        ]
        scores = [t.score for t in tracks if t.used_for_verdict]
        score = max(scores) if scores else None
        if score is None:
            warnings.append("no usable face was scored in the stream: it cannot be judged")
        if self.frames_dropped:
            warnings.append(
                f"{self.frames_dropped} frame(s) dropped: the analysis could not keep up with the stream"
            )
        if self.audio_error is not None:
            warnings.append(self.audio_error)
        if self.tiny:
            warnings.append(f"ignored {self.tiny} face detection(s) smaller than {s.min_face_px:.0f} px")
        assert self.pipeline.backend is not None
        return StreamSummary(
            t=round(self.last_t, 3),
            verdict=verdict_for(score, self.meta.threshold),
            score=score,
            threshold=self.meta.threshold,
            tracks=tracks,
            frames_received=self.frames_received,
            frames_analysed=self.frames_analysed,
            frames_dropped=self.frames_dropped,
            windows=self.windows,
            model=self.pipeline.backend.info,
            timings_ms={k: round(v, 1) for k, v in self.timings.items()},
            warnings=warnings,
        )
