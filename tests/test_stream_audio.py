"""The audio-visual signal on live streams: audio pushed into a StreamSession beside synthesised frames (the
real default detector, random-weight visual and sync models), the ring buffer that bounds it, a stream
without audio (no_audio, the visual scores unchanged), and ``deepfake watch FILE --json`` on a clip with
speech-like audio."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from deepfake.contracts.schemas import StreamResult, StreamSummary
from gateway.app import create_app
from inference.onnx_backend import OnnxBackend
from inference.sync_backend import OnnxSyncModel
from preprocessor.audio import SAMPLE_RATE
from preprocessor.audio_ring import AudioRing
from preprocessor.pipeline import Pipeline
from preprocessor.settings import PipelineSettings
from preprocessor.stream import AUDIO_BUFFER_S, AV_WINDOWS, StreamSession
from tests import synth
from tests.synth_speech import mux_audio, speech_like
from tests.test_cli import deepfake

FPS = 25.0
CHUNK_S = 0.02  # a chunk of audio every 20 ms, the size an audio codec's frames come in


@pytest.fixture(scope="module")
def backend(random_model_path):
    return OnnxBackend(random_model_path, threads=1)


@pytest.fixture(scope="module")
def sync_model(random_sync_model_path):
    return OnnxSyncModel(random_sync_model_path, threads=1)


def stream(backend, detector, sync_model, frames, audio=None, check=None):
    """Frames at FPS (blocking: nothing dropped, reproducible), with ``audio`` pushed in CHUNK_S chunks up
    to each frame's time; ``check(session)`` after every push. Returns (results, summary)."""
    results: list[StreamResult] = []
    pipeline = Pipeline(PipelineSettings(threads=1), backend, detector, sync_model=sync_model)
    session = StreamSession(pipeline, on_result=results.append)
    chunk = round(CHUNK_S * SAMPLE_RATE)
    pushed = 0
    for i, rgb in enumerate(frames):
        t = i / FPS
        while audio is not None and pushed < len(audio) and pushed / SAMPLE_RATE <= t:
            session.push_audio(audio[pushed : pushed + chunk], pushed / SAMPLE_RATE)
            pushed += chunk
            if check is not None:
                check(session)
        session.push(rgb if session.needs_pixels(True) else None, t, block=True)
        if check is not None:
            check(session)
    return results, session.finish(timeout_s=300)


def test_speech_gets_a_rolling_audio_visual_score_with_bounded_memory(backend, default_detector, sync_model):
    seconds = 12.0  # longer than the ring: it must wrap, never grow
    frames, _ = synth.face_frames(int(seconds * FPS), motion="still")
    capacity = round(AUDIO_BUFFER_S * SAMPLE_RATE)
    held: list[int] = []

    def check(session: StreamSession) -> None:
        held.append(session.audio.held)
        assert session.audio.held <= capacity
        for state in session._states.values():
            assert state.av_windows is None or len(state.av_windows) <= AV_WINDOWS

    results, summary = stream(
        backend, default_detector, sync_model, frames, speech_like(seconds), check=check
    )
    assert max(held) == capacity  # the ring filled and then only wrapped
    avs = [t.audio_visual for r in results for t in r.tracks]
    assert avs and all(av is not None for av in avs)
    scored = [av for av in avs if av is not None and av.reason == "scored"]
    # Before a window's audio (+1 s) has arrived the face has no score yet, and says why.
    assert {av.reason for av in avs if av is not None} <= {"scored", "too_few_windows"}
    assert len(scored) >= 5
    assert all(0 <= av.score <= 1 and 2 <= av.windows_scored <= AV_WINDOWS for av in scored)  # type: ignore[operator]
    assert all(av.offset_s is not None and abs(av.offset_s) <= 1.0 for av in scored)
    # Scored about once a second, not every result: consecutive results repeat the same score.
    assert len({av.score for av in scored}) < len(scored)
    final = summary.tracks[0].audio_visual
    assert final is not None and final.reason == "scored"
    distinct = sorted({av.score for av in scored})  # type: ignore[type-var]
    assert distinct[0] - 1e-4 <= final.score <= distinct[-1] + 1e-4  # type: ignore[operator]
    # Every 0.64 s window of the 12 s with speech counted once (the first few and the tail may not be).
    assert 10 <= final.windows_scored <= 20


def test_a_stream_without_audio_says_no_audio_and_scores_as_before(backend, default_detector, sync_model):
    frames, _ = synth.face_frames(60, motion="pan")
    plain, plain_summary = stream(backend, default_detector, None, frames)
    silent, silent_summary = stream(backend, default_detector, sync_model, frames)
    assert all(t.audio_visual is None for r in plain for t in r.tracks)  # the signal off: no field
    assert plain_summary.tracks[0].audio_visual is None
    assert all(
        t.audio_visual is not None and t.audio_visual.reason == "no_audio" and t.audio_visual.score is None
        for r in silent
        for t in r.tracks
    )
    final = silent_summary.tracks[0].audio_visual
    assert final is not None and final.reason == "no_audio" and final.windows_scored == 0

    def visual(results: list[StreamResult]) -> list[tuple]:
        return [(r.t, [(t.id, t.score, t.smoothed, t.verdict, t.windows) for t in r.tracks]) for r in results]

    assert visual(silent) == visual(plain)
    assert [t.score for t in silent_summary.tracks] == [t.score for t in plain_summary.tracks]
    assert silent_summary.score == plain_summary.score


def test_the_ring_keeps_the_latest_seconds_on_the_timeline_through_gaps_and_overlaps():
    ring = AudioRing(2.0)
    assert ring.snapshot() is None and ring.end_s is None
    ramp = np.arange(SAMPLE_RATE, dtype=np.float32)  # 1 s; each sample's value is its index
    ring.push(ramp, 10.0)
    ring.push(ramp[8000:] + 0.5, 10.5)  # overlaps the last half second: only what is new is kept
    track = ring.snapshot()
    assert track is not None and track.start_s == 10.0 and len(track.samples) == SAMPLE_RATE
    ring.push(ramp[:1600], 11.5)  # a 0.5 s gap: silence in between, the chunk at its own time
    track = ring.snapshot()
    assert track is not None and track.start_s == pytest.approx(10.0) and track.end_s == pytest.approx(11.6)
    assert np.all(track.samples[SAMPLE_RATE : SAMPLE_RATE + 8000] == 0)
    assert track.samples[int(1.5 * SAMPLE_RATE)] == 0.0 and track.samples[-1] == 1599.0
    for i in range(60):  # a minute more: the ring wraps, holds 2 s, and the times still match
        ring.push(ramp + i, 11.6 + i)
        assert ring.held <= ring.capacity
    track = ring.snapshot()
    assert track is not None and len(track.samples) == ring.capacity
    assert track.end_s == pytest.approx(71.6) and track.start_s == pytest.approx(69.6)
    assert track.samples[0] == 58.0 and track.samples[-1] == SAMPLE_RATE - 1 + 59.0


def test_watch_a_file_with_speech_shows_the_audio_visual_signal(
    tmp_path, random_model_path, random_sync_model_path
):
    silent = synth.write_face_video(tmp_path / "silent.mp4", n_frames=100, motion="still").path
    video = mux_audio(silent, tmp_path / "speech.mp4", speech_like(4.0))
    run = deepfake(
        "watch", str(video), "--json", "--model", str(random_model_path),
        "--sync-model", str(random_sync_model_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    results = [StreamResult.model_validate(x) for x in lines[:-1]]
    summary = StreamSummary.model_validate(lines[-1])
    reasons = {t.audio_visual.reason for r in results for t in r.tracks if t.audio_visual is not None}
    assert "scored" in reasons
    final = summary.tracks[0].audio_visual
    assert final is not None and final.reason == "scored" and final.score is not None


@pytest.mark.parametrize("delay_s", [0.0, 0.5])
def test_a_live_source_hands_on_the_audio_decode_audio_reads_at_the_same_times(tmp_path, delay_s):
    """The live source's audio lands on the frames' timeline exactly where the file path puts it, an audio
    track that starts late included (so the sync model hears the same thing live as for the file)."""
    from preprocessor.audio import decode_audio
    from preprocessor.live_source import LiveSource

    silent = synth.write_face_video(tmp_path / "silent.mp4", n_frames=50, motion="still").path
    video = mux_audio(silent, tmp_path / "speech.mp4", speech_like(2.0), delay_s=delay_s)
    chunks: list[tuple[np.ndarray, float]] = []
    source = LiveSource(str(video), PipelineSettings(threads=1))
    try:
        times = [f.t for f in source.frames(on_audio=lambda s, t: chunks.append((s, t)))]
    finally:
        source.close()
    assert source.has_audio and len(times) == 50 and times[0] == 0.0
    ring = AudioRing(10.0)
    for samples, t in chunks:
        ring.push(samples, t)
    live = ring.snapshot()
    file = decode_audio(video)
    assert live is not None and file is not None
    assert live.start_s == pytest.approx(file.start_s, abs=1e-3)
    assert (live.start_s > 0.3) == (delay_s > 0)  # the late start is kept, not squeezed to 0
    n = min(len(live.samples), len(file.samples))
    assert n > 1.9 * SAMPLE_RATE
    np.testing.assert_allclose(live.samples[:n], file.samples[:n], atol=1e-5)


def test_a_byte_stream_with_speech_gets_the_audio_visual_signal_through_the_gateway(
    tmp_path, random_model_path, random_sync_model_path, default_detector
):
    """A Matroska byte stream (H.264 + AAC speech; the EBML start a MediaRecorder's WebM has) sent in
    chunks over the gateway's WebSocket to a preprocessor that has a sync model: the audio is demuxed with
    the frames and every face gets its audio-visual entry, scored by the end."""
    from preprocessor.app import create_app as create_preprocessor_app
    from preprocessor.service_settings import ServiceSettings
    from tests.test_gateway_uploads import serve
    from tests.test_streams_api import gateway_settings, open_stream, read_all

    silent = synth.write_face_video(tmp_path / "silent.mp4", n_frames=75, motion="still").path
    data = mux_audio(silent, tmp_path / "speech.mkv", speech_like(3.0)).read_bytes()
    backend = OnnxBackend(random_model_path, threads=1)
    pre = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp_path / "pp", threads=1),
        backend_factory=lambda: backend,
        sync_factory=lambda: OnnxSyncModel(random_sync_model_path, threads=1),
    )
    with serve(pre) as (host, pre_port):
        gateway = create_app(gateway_settings(tmp_path, f"http://{host}:{pre_port}"))
        with serve(gateway) as (_, port), open_stream(f"ws://{host}:{port}/v1/streams") as ws:
            for start in range(0, len(data), 8192):  # at about the clip's pace: a live source
                ws.send(data[start : start + 8192])
                time.sleep(3.0 * 8192 / len(data))
            ws.send(json.dumps({"type": "end"}))
            messages, code = read_all(ws)
    assert code == 1000, messages[-1:]
    results = [StreamResult.model_validate(m) for m in messages[:-1]]
    summary = StreamSummary.model_validate(messages[-1])
    assert results and all(t.audio_visual is not None for r in results for t in r.tracks)
    final = summary.tracks[0].audio_visual
    assert final is not None and final.reason == "scored" and final.windows_scored >= 2


def test_watch_a_file_whose_audio_is_broken_keeps_the_video_and_says_audio_error(
    tmp_path, random_model_path, random_sync_model_path
):
    from tests.synth_speech import mux_garbage_audio

    silent = synth.write_face_video(tmp_path / "silent.mp4", n_frames=50, motion="still").path
    video = mux_garbage_audio(silent, tmp_path / "broken_audio.mkv")
    run = deepfake(
        "watch", str(video), "--json", "--model", str(random_model_path),
        "--sync-model", str(random_sync_model_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = StreamSummary.model_validate(json.loads(run.stdout.splitlines()[-1]))
    assert summary.frames_received == 50 and summary.windows > 0
    final = summary.tracks[0].audio_visual
    assert final is not None and final.reason == "audio_error" and final.score is None
    assert any("audio stream broke" in w for w in summary.warnings)
