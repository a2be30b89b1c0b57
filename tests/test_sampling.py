"""Sampling: clip windows spread over the video, upright frames, pts-based times, seeking."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessor.probe import probe
from preprocessor.sampling import FrameSampler, plan_windows
from tests import synth


def sample(video, frames=32, clip_len=8, stride=2):
    probed = probe(video.path, 10**9, 3600)
    plan = plan_windows(probed.info.duration_s, probed.info.fps, frames, clip_len, stride)
    sampler = FrameSampler(probed, plan, threads=1)
    return plan, sampler, list(sampler.windows())


def test_plan_spreads_non_overlapping_windows():
    plan = plan_windows(duration_s=10.0, fps=25.0, frames=32, clip_len=8, stride=2)
    assert len(plan.starts) == 4 and plan.stride == 2
    span = 8 * 2 / 25
    assert all(b - a >= span for a, b in zip(plan.starts, plan.starts[1:], strict=False))
    assert plan.starts[0] >= 0 and plan.starts[-1] + span <= 10.0 + 1e-9


def test_plan_shrinks_for_short_videos():
    plan = plan_windows(duration_s=0.4, fps=25.0, frames=32, clip_len=8, stride=2)  # 10 frames
    assert len(plan.starts) == 1 and plan.stride == 1


def test_windows_hold_clip_len_frames_in_time_order(synth_videos):
    plan, _, windows = sample(synth_videos["pan"])  # 60 frames: 3 windows of 8 at stride 2
    assert [len(w) for w in windows] == [8] * len(plan.starts)
    times = [f.t for w in windows for f in w]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert [f.index for w in windows for f in w] == list(range(len(times)))
    assert windows[0][1].t - windows[0][0].t == pytest.approx(plan.stride / 25, abs=1e-3)


@pytest.mark.parametrize("name", ["rotation90", "rotation270"])
def test_rotation_metadata_gives_upright_frames(synth_videos, name):
    video = synth_videos[name]
    _, _, windows = sample(video, frames=8)
    upright, _ = synth.face_frames(video.n_frames, video.width, video.height)
    frame = windows[0][0]
    assert frame.rgb.shape == (360, 640, 3)
    error_upright = np.abs(frame.rgb.astype(int) - upright[frame.frame_index].astype(int)).mean()
    error_flipped = np.abs(frame.rgb.astype(int) - upright[frame.frame_index][::-1, ::-1].astype(int)).mean()
    assert error_upright < 6 < error_flipped


def test_variable_frame_rate_uses_presentation_times(synth_videos):
    video = synth_videos["vfr"]
    _, _, windows = sample(video, frames=8, stride=1)
    truth = np.array(video.times)
    for frame in windows[0]:
        assert np.min(np.abs(truth - frame.t)) < 1e-3


def test_long_video_seeks_instead_of_decoding_everything(synth_videos):
    video = synth_videos["long_gop"]  # 250 frames, keyframe every 25
    plan, sampler, windows = sample(video)
    assert sum(len(w) for w in windows) == 32
    assert sampler.frames_decoded < 0.6 * video.n_frames
    assert windows[-1][-1].t > 0.8 * video.n_frames / video.fps


def test_truncated_faststart_file_keeps_what_decodes(tmp_path, synth_videos):
    """A file cut short after its index: the decodable part is used and the cut is reported."""
    frames, _ = synth.face_frames(50, 320, 180)
    full = synth.write_video(tmp_path / "full.mkv", frames)  # Matroska: header first, like faststart MP4
    cut = synth.write_truncated_copy(full, tmp_path / "cut.mkv", 0.6)
    probed = probe(cut, 10**9, 3600)
    plan = plan_windows(probed.info.duration_s or 2.0, probed.info.fps, 16, 8, 1)
    sampler = FrameSampler(probed, plan, threads=1)
    got = [f for w in sampler.windows() for f in w]
    assert 0 < len(got) < 16
    assert got[-1].t < 1.3
    assert any("truncated" in w for w in sampler.warnings)


def test_complete_file_has_no_truncation_warning(synth_videos):
    _, sampler, _ = sample(synth_videos["pan"])
    assert sampler.warnings == []
