"""The rate limiter and the upload type sniffing, without any HTTP in between (the job stores:
tests/test_job_stores.py)."""

from __future__ import annotations

import pytest

from deepfake.uploads import safe_display_name, sniff_video_container
from gateway.rate_limit import RateLimiter
from tests import synth


def test_token_bucket_allows_the_budget_then_says_how_long_to_wait():
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(20.0)  # one token per 20 s
    assert limiter.acquire("other") == 0.0
    now[0] = 20.0
    assert limiter.acquire("k") == 0.0
    assert RateLimiter(per_minute=0).acquire("k") == 0.0  # 0 disables the limit


def test_sniffing_judges_the_bytes_not_the_name(tmp_path, synth_videos, bad_inputs):
    assert sniff_video_container(synth_videos["pan"].path.read_bytes()[:256]) == "mp4"
    assert sniff_video_container(synth_videos["rotation270"].path.read_bytes()[:256]) == "mp4"  # .mov
    mkv = synth.write_zero_frame_video(tmp_path / "z.mkv")
    assert sniff_video_container(mkv.read_bytes()[:256]) == "matroska"
    assert sniff_video_container(bad_inputs["jpeg"].read_bytes()[:256]) is None
    assert sniff_video_container(bad_inputs["not_a_video"].read_bytes()[:256]) is None
    assert sniff_video_container(b"") is None


def test_client_filenames_are_reduced_to_a_safe_display_name():
    assert safe_display_name("../../etc/passwd") == "passwd"
    assert safe_display_name("C:\\\\videos\\\\clip one.mp4") == "clip one.mp4"
    assert safe_display_name("a<b>|c.mp4") == "a_b__c.mp4"
    assert safe_display_name("") is None and safe_display_name(None) is None
