"""Benchmark live streams in-process: a 720p 25 fps clip with one face played at its real pace.

Prints, for one stream:
- latency from a frame's arrival to the first result whose scored window contains that frame's time
  (p50, p95 over every frame covered by a window), and each result's own ``latency_ms`` (from the arrival
  of the newest frame in its window);
- the first verdict: seconds from the first frame's arrival to the first result that has a face verdict;
- frames received, analysed, dropped;
- agreement: the highest final track score of the stream vs ``deepfake detect`` (Pipeline.analyze) on the
  same file (the issue's target: within 0.10), and with ``--real N`` on N dev videos of the data folder.
With ``--stack``: the same clip through the real stack (gateway WebSocket -> preprocessor -> Triton), its
latency p95 as a ratio of the in-process one (the issue's target: <= 1.2). With ``--concurrency``: for 1,
2, ... streams at once (each decoding its own copy of the clip at real pace), the drop rate and p95
latency, the largest count whose streams drop under 1% of their analysed frames, and the drop rate at
twice that count. With ``--long S``: S seconds of frames as fast as the analysis goes, this process's
resident memory after the first minute and at the end (memory must not grow with the stream's length).
With ``--audio``: the same clip with speech-like audio muxed in (tests/synth_speech.py) streamed again with
the sync model (the shipped one, else a random stand-in of its architecture) and its audio pushed: the
cost of the audio-visual signal (latency, drops, ``timings_ms.audio_visual``) beside the run without it.

Why real pace from a real decoder: drops and latency only mean something when frames come at the rate a
camera sends them and the decoder competes for the same cores as the analysis.

Usage: .venv/bin/python scripts/bench_stream.py [--model PATH] [--seconds S] [--stack] [--real N]
       [--long S] [--concurrency] [--audio] [--sync-model PATH] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports

from deepfake.contracts.schemas import StreamResult, StreamSummary
from inference.onnx_backend import OnnxBackend
from preprocessor.detectors.base import create_detector
from preprocessor.live_source import LiveSource
from preprocessor.pipeline import Pipeline
from preprocessor.settings import PipelineSettings
from preprocessor.stream import StreamSession
from scripts.bench_pipeline import (
    CACHE,
    resolve_model,
    resolve_sync_model,
    synthetic_clip,
)

DROP_OK = 0.01  # a count of streams is "sustained" when each drops under 1% of the frames it analyses


@dataclass
class Run:
    """One stream's record: every frame's (t, arrival), every result with the time it arrived."""

    frames: list[tuple[float, float]] = field(default_factory=list)
    results: list[tuple[float, StreamResult]] = field(default_factory=list)
    summary: StreamSummary | None = None


def play(video: Path, pipeline: Pipeline, settings: PipelineSettings) -> Run:
    """Decode ``video`` at its real pace into a fresh StreamSession; frames it cannot take are dropped."""
    run = Run()
    session = StreamSession(pipeline, on_result=lambda r: run.results.append((time.perf_counter(), r)))
    source = LiveSource(str(video), settings, realtime=True)
    on_audio = session.push_audio if session.wants_audio else None
    try:
        for item in source.frames(on_audio=on_audio):
            arrival = time.perf_counter()
            run.frames.append((item.t, arrival))
            session.push(item.rgb() if session.needs_pixels() else None, item.t, arrival=arrival)
    finally:
        source.close()
    run.summary = session.finish()
    return run


def frame_latencies_ms(run: Run) -> tuple[list[float], int]:
    """Per frame: arrival -> the first result with a scored window covering its time; (latencies, frames
    no window covers)."""
    windows = [(at, t.window[0], t.window[1]) for at, r in run.results for t in r.tracks]
    latencies, uncovered = [], 0
    for t, arrival in run.frames:
        covering = [at for at, start, end in windows if start - 1e-6 <= t <= end + 1e-6 and at >= arrival]
        if covering:
            latencies.append((min(covering) - arrival) * 1000)
        else:
            uncovered += 1
    return latencies, uncovered


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def one_stream(video: Path, pipeline: Pipeline, settings: PipelineSettings) -> dict:
    run = play(video, pipeline, settings)
    assert run.summary is not None
    latencies, uncovered = frame_latencies_ms(run)
    first_arrival = run.frames[0][1]
    first_verdict = next((at - first_arrival for at, r in run.results if r.tracks), None)
    own = [r.latency_ms for _, r in run.results]
    summary = run.summary
    return {
        "frames_received": summary.frames_received,
        "frames_analysed": summary.frames_analysed,
        "frames_dropped": summary.frames_dropped,
        "frame_latency_ms_p50": pct(latencies, 50),
        "frame_latency_ms_p95": pct(latencies, 95),
        "frames_not_in_a_window": uncovered,
        "result_latency_ms_p50": pct(own, 50),
        "result_latency_ms_p95": pct(own, 95),
        "first_verdict_s": None if first_verdict is None else round(first_verdict, 3),
        "results": len(run.results),
        "windows": summary.windows,
        "final_score": summary.score,
        "final_tracks": [t.model_dump() for t in summary.tracks],
        "timings_ms": summary.timings_ms,
    }


def with_audio(
    video: Path, seconds: float, pipeline: Pipeline, settings: PipelineSettings, sync: Path | None
) -> dict:
    """``one_stream`` on ``video`` with speech-like audio muxed in, the sync model on and its audio pushed."""
    from inference.sync_backend import OnnxSyncModel
    from tests.synth_speech import mux_audio, speech_like

    speech = CACHE / f"{video.stem}_speech.mp4"
    if not speech.exists():
        mux_audio(video, speech.with_suffix(".tmp.mp4"), speech_like(seconds)).rename(speech)
    sync_path, sync_kind = resolve_sync_model(sync)
    sync_model = OnnxSyncModel(sync_path, threads=settings.threads)
    audio_pipeline = Pipeline(settings, pipeline.backend, pipeline.detector, sync_model=sync_model)
    row = one_stream(speech, audio_pipeline, settings)
    final = [t.get("audio_visual") for t in row["final_tracks"]]
    return {
        **{k: v for k, v in row.items() if k != "final_tracks"},
        "sync_model": f"{sync_path.name} ({sync_kind})",
        "stream_s": round(row["frames_received"] / 25.0, 2),
        "audio_visual_ms": row["timings_ms"].get("audio_visual", 0.0),
        "final_audio_visual": final,
    }


def real_videos(data_dir: Path, n: int) -> list[Path]:
    """Up to ``n`` dev videos, alternating FF++ c23 / DFDC and fake / real, in a fixed order."""
    groups = [
        sorted((data_dir / "videos" / f / label).glob("*.mp4"))
        for f in ("FF++c23", "DFDC")
        for label in ("fake", "real")
    ]
    picked = [v for row in zip(*[g for g in groups if g], strict=False) for v in row]
    return picked[:n]


def agreement(video: Path, pipeline: Pipeline, settings: PipelineSettings) -> dict:
    """The stream's final score at real pace vs ``deepfake detect``'s on the same file."""
    run = play(video, pipeline, settings)
    assert run.summary is not None
    detect = pipeline.analyze(video).score
    stream = run.summary.score
    diff = None if detect is None or stream is None else round(abs(detect - stream), 4)
    return {
        "video": video.name,
        "detect": detect,
        "stream": stream,
        "diff": diff,
        "frames_dropped": run.summary.frames_dropped,
    }


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_stream(pipeline: Pipeline, seconds: float) -> dict:
    """``seconds`` of 720p 25 fps frames (a 2 s loop of one face, no decoder) as fast as the analysis goes:
    resident memory after the first minute vs at the end (bounded memory means they are about equal)."""
    from tests import synth

    loop, _ = synth.face_frames(50, 1280, 720, motion="rotate", face_px=180)
    loop += loop[::-1]
    session = StreamSession(pipeline)
    n = int(seconds * 25)
    samples: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        session.push(loop[i % len(loop)] if session.needs_pixels(True) else None, i / 25, block=True)
        if i == 60 * 25:
            samples["rss_mb_at_60s"] = round(rss_mb(), 1)
    summary = session.finish()
    samples["rss_mb_at_end"] = round(rss_mb(), 1)
    return {
        "stream_seconds": seconds,
        "wall_s": round(time.perf_counter() - start, 1),
        "windows": summary.windows,
        "tracks": len(summary.tracks),
        **samples,
    }


def concurrent(video: Path, backend: OnnxBackend, settings: PipelineSettings, n: int) -> dict:
    """``n`` streams at once, each with its own detector and decoder, one shared model session."""
    runs: list[Run] = []
    lock = threading.Lock()

    def worker() -> None:
        run = play(video, Pipeline(settings, backend, create_detector(settings.detector)), settings)
        with lock:
            runs.append(run)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    analysed = sum(r.summary.frames_analysed + r.summary.frames_dropped for r in runs if r.summary)
    dropped = sum(r.summary.frames_dropped for r in runs if r.summary)
    latencies = [x for r in runs for x in frame_latencies_ms(r)[0]]
    return {
        "streams": n,
        "drop_rate": round(dropped / max(1, analysed), 4),
        "frame_latency_ms_p95": pct(latencies, 95),
    }


def through_stack(video: Path, settings: PipelineSettings) -> dict:
    """The same clip at real pace through the stack started for real (gateway WebSocket -> preprocessor ->
    Triton, cli/local_stack.py): frames JPEG-encoded beforehand (a client's work, kept out of the
    measurement), sent with their times; latency measured on the client from each frame's send."""
    import cv2
    from websockets.sync.client import connect

    from cli.local_stack import LocalStack, Ports

    source = LiveSource(str(video), settings)
    frames = [
        (item.t, cv2.imencode(".jpg", cv2.cvtColor(item.rgb(), cv2.COLOR_RGB2BGR))[1].tobytes())
        for item in source.frames()
    ]
    source.close()
    api_key = secrets.token_urlsafe(16)
    stack = LocalStack(
        run_dir=CACHE / "stack",
        ports=Ports.free(),
        api_key=api_key,
        env={"DEEPFAKE_RATE_LIMIT_PER_MINUTE": "0", "DEEPFAKE_THREADS": str(settings.threads)},
    )
    run = Run()
    try:
        stack.up()
        url = stack.urls["gateway"].replace("http://", "ws://") + "/v1/streams"
        with connect(url, additional_headers={"X-API-Key": api_key}, max_size=None) as ws:

            def read() -> None:
                for message in ws:
                    body = json.loads(message)
                    if body["type"] == "result":
                        run.results.append((time.perf_counter(), StreamResult.model_validate(body)))
                    elif body["type"] == "final":
                        run.summary = StreamSummary.model_validate(body)
                    else:
                        print(f"stream refused: {body}")

            reader = threading.Thread(target=read)
            reader.start()
            start = time.perf_counter()
            for t, data in frames:
                wait = start + t - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                ws.send(json.dumps({"t": t}))
                ws.send(data)
                run.frames.append((t, time.perf_counter()))
            ws.send(json.dumps({"type": "end"}))
            reader.join(120)
    finally:
        stack.down()
    latencies, uncovered = frame_latencies_ms(run)
    summary = run.summary
    return {
        "frames_received": summary.frames_received if summary else None,
        "frames_dropped": summary.frames_dropped if summary else None,
        "frame_latency_ms_p50": pct(latencies, 50),
        "frame_latency_ms_p95": pct(latencies, 95),
        "frames_not_in_a_window": uncovered,
        # measured in the preprocessor: the arrival of a window's newest frame there -> its result
        "result_latency_ms_p50": pct([r.latency_ms for _, r in run.results], 50),
        "result_latency_ms_p95": pct([r.latency_ms for _, r in run.results], 95),
        "first_verdict_s": next((round(at - run.frames[0][1], 3) for at, r in run.results if r.tracks), None),
        "final_score": summary.score if summary else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic clip")
    parser.add_argument("--concurrency", action="store_true", help="also find the streams sustained")
    parser.add_argument("--max-streams", type=int, default=8)
    parser.add_argument(
        "--stack", action="store_true", help="also through gateway -> preprocessor -> Triton (real processes)"
    )
    parser.add_argument(
        "--long", type=float, default=0, help="also stream this many seconds as fast as possible: memory"
    )
    parser.add_argument("--real", type=int, default=0, help="also compare N real dev videos with detect")
    parser.add_argument(
        "--audio", action="store_true", help="also the clip with speech, with the sync model: its cost"
    )
    parser.add_argument("--sync-model", type=Path, help="audio-visual sync model (default: the shipped one)")
    parser.add_argument("--data-dir", type=Path, default=PipelineSettings().data_dir)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    model, model_kind = resolve_model(args.model)
    settings = PipelineSettings(model_path=model)
    video = synthetic_clip(
        CACHE / f"stream_720p_25fps_{args.seconds:g}s.mp4", args.seconds, 1280, 720, fps=25.0
    )
    backend = OnnxBackend(model, threads=settings.threads)
    detector = create_detector(settings.detector)
    pipeline = Pipeline(settings, backend, detector)
    print(
        f"model: {model} ({model_kind}); clip: {video.name}; hop {settings.stream_hop}, "
        f"queue {settings.stream_queue_frames}, stride {settings.frame_stride}, threads {settings.threads}"
    )

    report: dict = {
        "model": str(model),
        "clip": video.name,
        "settings": {
            "stream_hop": settings.stream_hop,
            "stream_queue_frames": settings.stream_queue_frames,
            "frame_stride": settings.frame_stride,
            "detect_every": settings.detect_every,
            "threads": settings.threads,
        },
    }
    stream = one_stream(video, pipeline, settings)
    report["stream"] = stream
    detect = pipeline.analyze(video)
    report["detect_score"] = detect.score
    report["agreement"] = (
        None
        if detect.score is None or stream["final_score"] is None
        else round(abs(detect.score - stream["final_score"]), 4)
    )
    print(json.dumps({k: v for k, v in stream.items() if k not in ("final_tracks", "timings_ms")}, indent=1))
    print(
        f"stream final score {stream['final_score']} vs detect {detect.score}: |diff| {report['agreement']}"
    )

    if args.audio:
        report["stream_audio"] = with_audio(video, args.seconds, pipeline, settings, args.sync_model)
        row = report["stream_audio"]
        print(
            f"with audio ({row['sync_model']}): frame latency p50 {row['frame_latency_ms_p50']} / p95 "
            f"{row['frame_latency_ms_p95']} ms (without: {stream['frame_latency_ms_p50']} / "
            f"{stream['frame_latency_ms_p95']}), {row['frames_dropped']} dropped, audio_visual "
            f"{row['audio_visual_ms']} ms of {row['stream_s']} s stream, final {row['final_audio_visual']}"
        )

    if args.stack:
        stack = through_stack(video, settings)
        report["stack"] = stack
        in_p95, stack_p95 = stream["frame_latency_ms_p95"], stack["frame_latency_ms_p95"]
        report["stack_p95_ratio"] = round(stack_p95 / in_p95, 3) if in_p95 and stack_p95 else None
        print(
            f"through the stack: {json.dumps(stack)}; "
            f"p95 ratio stack / in-process {report['stack_p95_ratio']}"
        )

    if args.long:
        report["long"] = long_stream(pipeline, args.long)
        print(f"long stream: {json.dumps(report['long'])}")

    if args.real:
        rows = [agreement(v, pipeline, settings) for v in real_videos(args.data_dir, args.real)]
        for row in rows:
            print(
                f"{row['video']}: stream {row['stream']} vs detect {row['detect']}: |diff| {row['diff']} "
                f"({row['frames_dropped']} dropped)"
            )
        diffs = [r["diff"] for r in rows if r["diff"] is not None]
        report["real"] = {"videos": rows, "max_diff": max(diffs) if diffs else None}
        if not rows:
            print(f"no real videos under {args.data_dir / 'videos'}")

    if args.concurrency:
        rows = []
        sustained = 0
        for n in range(1, args.max_streams + 1):
            row = concurrent(video, backend, settings, n)
            rows.append(row)
            print(
                f"{n} stream(s): drop rate {row['drop_rate']:.2%}, "
                f"frame latency p95 {row['frame_latency_ms_p95']} ms"
            )
            if row["drop_rate"] >= DROP_OK:
                break
            sustained = n
        report["concurrency"] = rows
        report["streams_sustained"] = sustained
        if sustained:
            double = concurrent(video, backend, settings, 2 * sustained)
            report["at_twice_sustained"] = double
            print(f"sustained: {sustained}; at {2 * sustained}: drop rate {double['drop_rate']:.2%}")
        else:
            print("sustained: 0 (one stream already drops over 1%)")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
