"""``deepfake watch SOURCE``: rolling scores while a video plays (a file, a webcam, a network stream).

Why it reads and analyses on two threads: the source is decoded on the main thread and handed to a
StreamSession (preprocessor/stream.py), whose worker detects, tracks and scores. A live source (a device,
a URL, a file with ``--realtime``) never waits for the analysis: frames it cannot take are dropped and
counted. A file without ``--realtime`` is read as fast as the analysis goes, nothing dropped, so its final
scores are reproducible. Ctrl-C ends a live source the normal way: the final summary is still printed.

Output: one line per result (``t``, per face the latest and smoothed score and the running verdict), or
with ``--json`` JSON Lines: every StreamResult, then the StreamSummary (``type: final``), whose track
scores are the mean over all windows scored, the rule of ``deepfake detect``. Exit status: 0 the stream
was analysed, 1 the source could not be read or the analysis failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from cli.commands import common
from deepfake.contracts.schemas import AudioVisualScore, ErrorDetail, FileError, StreamResult, StreamSummary

HELP = "Score a live video while it plays: a file (--realtime: at its own pace), /dev/videoN or a URL."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a video file, a V4L2 device (/dev/video0) or a URL FFmpeg opens (rtsp://, http(s)://, HLS)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON Lines: one object per result, then a final one"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="play a file at its real pace (frames the analysis cannot take are dropped, as for a live "
        "source); without it a file is read as fast as the analysis goes and nothing is dropped",
    )
    parser.add_argument(
        "--max-seconds", type=float, help="stop after this many seconds of stream time (default: the end)"
    )
    parser.add_argument(
        "--hop",
        type=int,
        help="score every n analysed frames (default 4, env DEEPFAKE_STREAM_HOP; lower: faster updates)",
    )
    common.add_pipeline_arguments(parser, frames=False)
    common.add_audio_arguments(parser)


def lip_sync(av: AudioVisualScore | None) -> str:
    """`` lips out of sync 0.12`` when the face has an audio-visual score, else nothing (the signal is off
    or has no score yet; the JSON says why)."""
    return "" if av is None or av.score is None else f", lips out of sync {av.score:.2f}"


def result_line(result: StreamResult) -> str:
    """``  12.34s  face 0: 0.123 (smoothed 0.101) real | ...  latency 85 ms``"""
    faces = " | ".join(
        f"face {t.id}: {t.score:.3f} (smoothed {t.smoothed:.3f}) {t.verdict}{lip_sync(t.audio_visual)}"
        for t in result.tracks
    )
    dropped = f", {result.frames_dropped} dropped" if result.frames_dropped else ""
    return f"{result.t:8.2f}s  {faces or 'no face'}  [latency {result.latency_ms:.0f} ms{dropped}]"


def summary_lines(summary: StreamSummary) -> str:
    score = "-" if summary.score is None else f"{summary.score:.3f}"
    lines = [
        f"final: {summary.verdict} (score {score}, threshold {summary.threshold:.3f}; {summary.windows} "
        f"windows, {summary.frames_analysed} of {summary.frames_received} frames analysed, "
        f"{summary.frames_dropped} dropped)"
    ]
    for track in summary.tracks:
        note = "" if track.used_for_verdict else " (does not decide: small or brief)"
        lines.append(
            f"  face {track.id}: {track.score:.3f} {track.verdict}, mean of {track.windows} windows, "
            f"{track.start_s:.2f}-{track.end_s:.2f}s{lip_sync(track.audio_visual)}{note}"
        )
    lines.extend(f"  warning: {w}" for w in summary.warnings)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        if args.max_seconds is not None and args.max_seconds <= 0:
            raise common.UsageError("--max-seconds must be positive")
        settings = common.settings_from_args(args, stream_hop=args.hop)
        common.set_threads(settings.threads)
        backend = common.load_backend(settings)
        detector = common.load_detector(settings)
        sync_model = common.load_sync_model(settings)
    except (common.UsageError, common.SetupError) as exc:
        return common.report_error(exc)

    from preprocessor.errors import VideoError
    from preprocessor.live_source import LiveSource
    from preprocessor.pipeline import Pipeline
    from preprocessor.stream import StreamSession

    def fail(detail: ErrorDetail) -> int:
        if args.json:
            print(FileError(path=args.source, error=detail).model_dump_json(), flush=True)
        else:
            print(f"deepfake: error: {args.source}: {detail.code}: {detail.message}", file=sys.stderr)
        return 1

    def show(result: StreamResult) -> None:
        print(result.model_dump_json() if args.json else result_line(result), flush=True)

    try:
        source = LiveSource(args.source, settings, realtime=args.realtime)
    except VideoError as exc:
        return fail(exc.to_error_detail())
    session = StreamSession(Pipeline(settings, backend, detector, sync_model=sync_model), on_result=show)
    on_audio = session.push_audio if session.wants_audio else None
    try:
        for item in source.frames(on_audio=on_audio, on_audio_error=session.audio_failed):
            if args.max_seconds is not None and item.t > args.max_seconds:
                break
            block = not source.live
            session.push(item.rgb() if session.needs_pixels(block) else None, item.t, block=block)
    except KeyboardInterrupt:
        pass  # the user ended the stream: summarise what was seen
    except VideoError as exc:
        session.close()
        return fail(exc.to_error_detail())
    except Exception as exc:
        if session.error is None:
            session.close()
            return fail(ErrorDetail(code="internal_error", message=f"{type(exc).__name__}: {exc}"))
    finally:
        source.close()
    try:
        summary = session.finish()
    except Exception as exc:  # the analysis failed on the worker (e.g. the model)
        return fail(
            ErrorDetail(code="internal_error", message=f"analysis failed: {type(exc).__name__}: {exc}")
        )
    print(summary.model_dump_json() if args.json else summary_lines(summary), flush=True)
    backend.close()
    if sync_model is not None:
        sync_model.close()
    return 0
