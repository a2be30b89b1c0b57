"""``deepfake watch`` as a real process: a synthesised file read as fast as possible or at its real pace, the
same file over HTTP from a server on loopback, and the refusals (missing, not a video, unreachable)."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading

import numpy as np
import pytest

from deepfake.contracts.schemas import FileError, StreamResult, StreamSummary
from tests import synth
from tests.test_cli import deepfake


@pytest.fixture(scope="module")
def face_video(synth_videos):
    return synth_videos["pan"]  # 60 frames at 25 fps, one face


@pytest.fixture(scope="module")
def ts_video(tmp_path_factory):
    """MPEG-TS, what a live HTTP source sends: readable front to back, no index to seek to."""
    return synth.write_face_video(tmp_path_factory.mktemp("live") / "live.ts", n_frames=60)


@pytest.fixture(scope="module")
def hls_playlist(ts_video):
    """An HLS playlist (live.m3u8 + MPEG-TS segments) of 60 face frames beside the TS stream."""
    frames, _ = synth.face_frames(60)
    return synth.write_video(ts_video.path.parent / "hls" / "live.m3u8", frames, gop=25)


@pytest.fixture(scope="module")
def http_root(ts_video):
    """The stream's folder served by a real HTTP server on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ts_video.path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def parse(stdout: str) -> tuple[list[StreamResult], StreamSummary]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines and lines[-1]["type"] == "final"
    assert all(line["type"] == "result" for line in lines[:-1])
    return [StreamResult.model_validate(x) for x in lines[:-1]], StreamSummary.model_validate(lines[-1])


def check_stream(results: list[StreamResult], summary: StreamSummary, n_frames: int) -> None:
    assert summary.frames_received == n_frames
    times = [r.t for r in results]
    assert times == sorted(times) and len(times) >= 2  # a live source may drop: a URL comes fast here
    assert all(r.latency_ms >= 0 for r in results)
    assert {t.id for r in results for t in r.tracks} == {0}
    # The final track score is the mean over every window the results reported (detect's rule).
    per_window = {t.windows: t.score for r in results for t in r.tracks}
    assert summary.tracks[0].windows == max(per_window) == summary.windows
    assert summary.tracks[0].score == pytest.approx(np.mean(list(per_window.values())), abs=2e-4)
    assert summary.score == summary.tracks[0].score


@pytest.mark.parametrize("realtime", [False, True])
def test_watch_a_file_json_lines(face_video, random_model_path, default_detector, realtime):
    flags = ["--realtime"] if realtime else []
    run = deepfake("watch", str(face_video.path), "--json", "--model", str(random_model_path), *flags)
    assert run.returncode == 0, run.stderr
    results, summary = parse(run.stdout)
    check_stream(results, summary, face_video.n_frames)
    if not realtime:
        assert summary.frames_dropped == 0  # read as fast as the analysis goes: nothing dropped


def test_watch_a_url_on_loopback(ts_video, http_root, random_model_path, default_detector):
    run = deepfake("watch", f"{http_root}/{ts_video.path.name}", "--json", "--model", str(random_model_path))
    assert run.returncode == 0, run.stderr
    check_stream(*parse(run.stdout), ts_video.n_frames)


def test_watch_an_hls_playlist_on_loopback(hls_playlist, http_root, random_model_path, default_detector):
    run = deepfake("watch", f"{http_root}/hls/live.m3u8", "--json", "--model", str(random_model_path))
    assert run.returncode == 0, run.stderr
    check_stream(*parse(run.stdout), 60)


def test_watch_prints_a_live_line_per_result_and_stops_at_max_seconds(
    face_video, random_model_path, default_detector
):
    run = deepfake("watch", str(face_video.path), "--max-seconds", "1", "--model", str(random_model_path))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any("face 0:" in line and "smoothed" in line and "latency" in line for line in lines)
    final = [line for line in lines if line.startswith("final:")]
    assert len(final) == 1 and "26 frames" in final[0]  # frames at t <= 1 s: 0..25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("missing", "file_not_found"),
        ("random", "not_a_video"),
        ("url", "source_unavailable"),
        ("/dev/video99", "source_unavailable"),
    ],
)
def test_watch_refuses_bad_sources_with_a_code_and_exit_1(
    source, code, bad_inputs, random_model_path, default_detector
):
    path = {
        "missing": str(bad_inputs["file_not_found"]),
        "random": str(bad_inputs["not_a_video"]),
        "url": f"http://127.0.0.1:{free_port()}/none.mp4",
    }.get(source, source)
    run = deepfake("watch", path, "--json", "--model", str(random_model_path))
    assert run.returncode == 1, run.stdout
    error = FileError.model_validate_json(run.stdout.strip().splitlines()[-1])
    assert error.error.code == code and error.path == path


def test_watch_usage_errors_exit_2(face_video, random_model_path):
    run = deepfake("watch", str(face_video.path), "--max-seconds", "0", "--model", str(random_model_path))
    assert run.returncode == 2 and "--max-seconds" in run.stderr
    run = deepfake("watch", str(face_video.path), "--hop", "0", "--model", str(random_model_path))
    assert run.returncode == 2 and "stream_hop" in run.stderr


def test_ctrl_c_ends_a_live_source_and_still_prints_the_summary(
    synth_videos, random_model_path, default_detector
):
    import signal
    import subprocess
    import sys

    from tests.test_cli import REPO_ROOT

    video = synth_videos["long_gop"]  # 10 s: still playing when the first result comes
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "watch", str(video.path), "--realtime", "--json"]
        + ["--model", str(random_model_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        first = json.loads(process.stdout.readline())  # the stream is playing: a result came
        assert first["type"] == "result"
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    final = json.loads(rest.splitlines()[-1])
    assert final["type"] == "final" and final["frames_received"] < video.n_frames
