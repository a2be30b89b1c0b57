"""Decoding: the frames the sampler returns are the frames at their times, in every container and codec.

Each synthetic video numbers its frames in the picture (tests/synth.py: ``frame_code_image``), so a
sampled frame can be checked three ways: against the frame a plain sequential decode gives at that
position (pixels), against the number it carries (which frame it is), and its time against that number
(``t * fps``). Keyframes come every 250 frames (x264's default: 10 s), so the windows in the second GOP
are reached by a seek that lands between keyframes and must decode forward from the keyframe before.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from deepfake.contracts.errors import http_status
from preprocessor.errors import VideoError
from preprocessor.probe import probe
from preprocessor.sampling import FrameSampler, plan_windows, to_display_rgb
from preprocessor.settings import PipelineSettings
from tests import synth

LIMITS = {"max_bytes": 10**9, "max_duration_s": 3600.0}
FPS = 25.0
N_FRAMES = 500  # 20 s: two GOPs of 250

# name -> (file name, writer keyword arguments, seeks expected)
VARIANTS = {
    "mp4-h264": ("v.mp4", {"codec": "libx264"}, True),
    "mkv-h264": ("v.mkv", {"codec": "libx264"}, True),
    "avi-mpeg4": ("v_mpeg4.avi", {"codec": "mpeg4"}, False),  # B-frames in AVI: decoded forward
    "avi-mjpeg": ("v_mjpeg.avi", {"codec": "mjpeg"}, True),
    "avi-h264-ticks50": ("v_h264.avi", {"codec": "libx264", "tick_rate": 50}, False),
    "avi-h264-no-b": ("v_h264_nob.avi", {"codec": "libx264", "b_frames": False}, True),
    "ts-mpeg2video": ("v_mpeg2.ts", {"codec": "mpeg2video"}, True),
    "ts-h264": ("v_h264.ts", {"codec": "libx264"}, True),
    "raw-h264": ("v.h264", {"codec": "libx264"}, False),  # no timestamps: decoded forward
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("indexed")
    return {
        name: synth.write_indexed_video(root / file, n_frames=N_FRAMES, fps=FPS, **kwargs)
        for name, (file, kwargs, _) in VARIANTS.items()
    }


def sequential_decode(path: Path, stream_index: int = 0) -> list[np.ndarray]:
    """Every frame in presentation order, from the start, as a player shows them."""
    with av.open(str(path)) as container:
        return [to_display_rgb(f) for f in container.decode(container.streams.video[stream_index])]


def sample(path: Path, frames: int = 32, clip_len: int = 8, stride: int = 2):
    probed = probe(path, **LIMITS)
    plan = plan_windows(probed.info.duration_s, probed.info.fps, frames, clip_len, stride)
    sampler = FrameSampler(probed, plan, threads=1)
    return probed, sampler, [f for w in sampler.windows() for f in w]


def assert_frames_are_the_ones_at_their_times(path: Path, got, fps: float, sequential=None) -> None:
    sequential = sequential if sequential is not None else sequential_decode(path)
    times = [f.t for f in got]
    assert times == sorted(times) and len(set(times)) == len(times), f"times out of order: {times}"
    for frame in got:
        position = round(frame.t * fps)
        assert synth.read_frame_code(frame.rgb) == position, (frame.t, synth.read_frame_code(frame.rgb))
        difference = np.abs(frame.rgb.astype(int) - sequential[position].astype(int)).mean()
        assert difference < 0.5, f"frame at {frame.t}s differs from the sequential decode by {difference:.1f}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_sampled_frames_match_a_sequential_decode(indexed, name):
    path = indexed[name]
    probed, sampler, got = sample(path)
    assert probed.info.fps == pytest.approx(FPS)
    assert probed.info.duration_s == pytest.approx(N_FRAMES / FPS, abs=0.1)
    assert len(got) == 32, sampler.warnings
    assert not sampler.warnings
    assert got[-1].t > 15.0  # the windows cover the second GOP too
    assert_frames_are_the_ones_at_their_times(path, got, FPS)
    if VARIANTS[name][2]:
        assert sampler.seeks >= 1  # a seek really landed between keyframes (10 s apart) ...
        # ... at the keyframe before the window (10 s), not an earlier one: decoding every frame up to the
        # end of the last window would take 445.
        assert sampler.frames_decoded < 0.85 * N_FRAMES


def test_avi_in_half_frame_ticks_reports_its_real_rate(indexed):
    """An AVI of 25 fps in 1/50 s ticks holds an empty chunk for every skipped tick: its average rate
    reads 50 fps and its chunk count 1000; the real rate and count are 25 and 500."""
    with av.open(str(indexed["avi-h264-ticks50"])) as container:
        assert container.streams.video[0].average_rate == 50  # the precondition
    info = probe(indexed["avi-h264-ticks50"], **LIMITS).info
    assert info.fps == pytest.approx(25.0) and info.frame_count == N_FRAMES


def test_raw_h264_times_come_from_the_frame_rate(indexed):
    probed = probe(indexed["raw-h264"], **LIMITS)
    assert probed.timing == "frame_rate" and not probed.seekable
    assert probed.info.frame_count == N_FRAMES
    assert probed.duration_from == "packets"


def test_raw_h264_over_the_limit_is_too_long(indexed):
    with pytest.raises(VideoError) as caught:
        probe(indexed["raw-h264"], max_bytes=10**9, max_duration_s=10.0)
    assert caught.value.code == "too_long"


def test_ts_keyframes_come_from_the_packets(indexed):
    probed = probe(indexed["ts-h264"], **LIMITS)
    assert [round(k - probed.start_time, 2) for k in probed.keyframes] == [0.0, 10.0]


def test_ts_with_a_single_keyframe_is_sampled(tmp_path):
    """One keyframe at the start and nothing after it: every window is decoded from the start."""
    path = synth.write_indexed_video(tmp_path / "one_key.ts", n_frames=250, gop=10_000)
    _, sampler, got = sample(path)
    assert len(got) == 32 and not sampler.warnings
    assert got[-1].t > 7.0
    assert_frames_are_the_ones_at_their_times(path, got, FPS)


def test_short_raw_h264_is_sampled(tmp_path):
    path = synth.write_indexed_video(tmp_path / "short.h264", n_frames=40, b_frames=False)
    probed, sampler, got = sample(path, frames=16, clip_len=8, stride=1)
    assert probed.info.duration_s == pytest.approx(40 / FPS)
    assert len(got) == 16 and not sampler.warnings
    assert_frames_are_the_ones_at_their_times(path, got, FPS)


# --- a second video stream, animated images, few frames ---------------------------------------------------


def test_a_second_video_stream_is_named_in_a_warning(tmp_path):
    path = synth.write_two_video_streams(tmp_path / "two_streams.mkv")
    probed = probe(path, **LIMITS)
    assert (probed.info.width, probed.info.height) == (192, 128)
    assert len(probed.warnings) == 1 and "2 video streams" in probed.warnings[0]


def test_pipeline_reports_the_second_video_stream(tmp_path, default_detector):
    from preprocessor.pipeline import Pipeline

    path = synth.write_two_video_streams(tmp_path / "two_streams.mkv")
    faces = Pipeline(PipelineSettings(frames=8, threads=1), None, default_detector).extract_faces(path)
    assert any("2 video streams" in w for w in faces.warnings), faces.warnings


def test_animated_webp_has_its_own_refusal(tmp_path):
    pytest.importorskip("PIL", reason="Pillow writes the animated WebP")
    path = synth.write_animated_webp(tmp_path / "anim.webp")
    try:
        info = probe(path, **LIMITS).info  # an FFmpeg that decodes animated WebP: a video
    except VideoError as error:
        assert error.code == "animated_image", error
        assert error.http_status == 415 == http_status("animated_image")
        assert "animated WebP" in error.message
    else:
        assert info.frame_count is None or info.frame_count > 1


def test_still_webp_is_still_not_a_video(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the WebP")
    path = tmp_path / "still.webp"
    pil.fromarray(synth.frame_code_image(0)).save(path, format="WEBP")
    with pytest.raises(VideoError) as caught:
        probe(path, **LIMITS)
    assert caught.value.code == "not_a_video" and "still image" in caught.value.message


@pytest.mark.parametrize("n_frames", [1, 2])
def test_a_verdict_from_one_or_two_frames_says_so(tmp_path, default_detector, n_frames):
    from preprocessor.pipeline import Pipeline

    path = synth.write_face_video(tmp_path / f"{n_frames}.mp4", n_frames=n_frames).path
    faces = Pipeline(PipelineSettings(threads=1), None, default_detector).extract_faces(path)
    assert faces.video.frames_sampled == n_frames
    assert any(f"only {n_frames} frame(s)" in w for w in faces.warnings), faces.warnings


def test_enough_frames_give_no_few_frames_warning(synth_videos, default_detector):
    from preprocessor.pipeline import Pipeline

    faces = Pipeline(PipelineSettings(frames=8, threads=1), None, default_detector).extract_faces(
        synth_videos["pan"].path
    )
    assert not any("frame(s) could be sampled" in w for w in faces.warnings)


# --- real footage -----------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("video", ["FF++c23/real/519.mp4", "FF++c23/fake/519_515.mp4"])
def test_ff_first_seek_returns_the_frames_at_their_times(data_dir: Path, video: str):
    """FF++ c23 is 4:4:4 x264 core 148: FFmpeg works around that x264's bugs only once it has read the
    version in the first frame's SEI. A fresh decoder seeked straight to a later keyframe gave green
    frames (mean absolute difference 103 against a sequential decode with --frames 8)."""
    path = data_dir / "videos" / video
    if not path.is_file():
        pytest.skip(f"{path} is not in the shared data")
    probed, sampler, got = sample(path, frames=8)
    assert len(got) == 8 and got[0].t > 10.0  # the window lies past the first keyframe: reached by a seek
    sequential = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            sequential.append((round(float(frame.time) - probed.start_time, 4), frame))
            if frame.time > got[-1].t + 1:
                break
    by_time = dict(sequential)
    for frame in got:
        reference = to_display_rgb(by_time[frame.t])
        difference = np.abs(frame.rgb.astype(int) - reference.astype(int)).mean()
        assert difference < 0.5, f"{video} at {frame.t}s: mean absolute difference {difference:.1f}"
