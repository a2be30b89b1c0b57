"""Probe: what a file is, and the specific refusal for each kind of bad input."""

from __future__ import annotations

import pytest

from deepfake.contracts.errors import http_status
from preprocessor.errors import VideoError
from preprocessor.probe import probe

LIMITS = {"max_bytes": 10**9, "max_duration_s": 3600.0}


def test_probe_describes_a_plain_video(synth_videos):
    info = probe(synth_videos["pan"].path, **LIMITS).info
    assert (info.width, info.height) == (640, 360)
    assert info.codec == "h264" and info.rotation == 0 and not info.has_audio
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(60 / 25, abs=0.05)
    assert info.frame_count == 60
    assert info.size_bytes == synth_videos["pan"].path.stat().st_size


@pytest.mark.parametrize("name, rotation", [("rotation90", 90), ("rotation270", 270)])
def test_probe_applies_rotation_metadata_to_display_size(synth_videos, name, rotation):
    info = probe(synth_videos[name].path, **LIMITS).info
    assert info.rotation == rotation
    assert (info.width, info.height) == (640, 360)  # stored 360x640, displayed landscape


def test_probe_sees_audio(synth_videos):
    assert probe(synth_videos["audio"].path, **LIMITS).info.has_audio


@pytest.mark.parametrize(
    "name, code",
    [
        ("empty_file", "empty_file"),
        ("not_a_video", "not_a_video"),
        ("jpeg", "not_a_video"),
        ("no_video_stream", "no_video_stream"),
        ("corrupt_video", "corrupt_video"),
        ("zero_frames", "zero_frames"),
        ("file_not_found", "file_not_found"),
    ],
)
def test_bad_inputs_are_refused_with_a_specific_code(bad_inputs, name, code):
    with pytest.raises(VideoError) as caught:
        probe(bad_inputs[name], **LIMITS)
    error = caught.value
    assert error.code == code
    assert error.http_status == http_status(code)
    detail = error.to_error_detail()
    assert detail.code == code and len(detail.message) > 20


def test_http_status_classes():
    assert VideoError("not_a_video", "x").http_status == 415
    assert VideoError("too_large", "x").http_status == 413
    assert VideoError("corrupt_video", "x").http_status == 422
    with pytest.raises(ValueError):
        VideoError("made_up_code", "x")


def test_limits_refuse_large_and_long_files(synth_videos):
    path = synth_videos["pan"].path
    with pytest.raises(VideoError) as too_large:
        probe(path, max_bytes=1000, max_duration_s=3600)
    assert too_large.value.code == "too_large" and too_large.value.details["max_bytes"] == 1000
    with pytest.raises(VideoError) as too_long:
        probe(path, max_bytes=10**9, max_duration_s=1.0)
    assert too_long.value.code == "too_long"
