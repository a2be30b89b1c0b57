"""One magic-byte table and one header-duration reader: the gateway's upload checks and the probe agree."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from deepfake.containers import SNIFF_BYTES, header_duration_s, is_animated_webp, sniff_video_container
from gateway.video_check import video_duration_s
from preprocessor.probe import looks_like_video_container, probe


def _pad(head: bytes) -> bytes:
    return head + bytes(SNIFF_BYTES - len(head))


_TS = b"".join(b"\x47" + bytes(187) for _ in range(2))[:SNIFF_BYTES]

# ISO BMFF / QuickTime: every top-level box a file may start with; pnot was probe-only.
_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# Synthesised first bytes -> the container the upload sniffing names (None: not a video).
HEADERS: dict[str, tuple[bytes, str | None]] = {
    **{f"mp4 {box.decode()}": (_pad(b"\x00\x00\x00\x18" + box + b"isom"), "mp4") for box in _BOXES},
    "matroska": (_pad(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81"), "matroska"),
    "avi": (_pad(b"RIFF\x00\x10\x00\x00AVI LIST"), "avi"),
    "flv": (_pad(b"FLV\x01\x05"), "flv"),
    "ogg": (_pad(b"OggS\x00\x02"), "ogg"),
    "asf": (_pad(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9"), "asf"),
    "mpeg ps": (_pad(b"\x00\x00\x01\xba\x44"), "mpeg"),
    "mpeg video": (_pad(b"\x00\x00\x01\xb3\x14"), "mpeg"),  # was upload-only
    "mpegts": (_TS, "mpegts"),  # was upload-only
    "h264 annex b": (_pad(b"\x00\x00\x00\x01\x67\x64\x00\x1f"), "h264"),  # was upload-only
    "hevc annex b": (_pad(b"\x00\x00\x00\x01\x40\x01\x0c\x01"), "hevc"),  # was upload-only
    "wav": (_pad(b"RIFF\x24\x08\x00\x00WAVEfmt "), None),
    "webp": (_pad(b"RIFF\x24\x08\x00\x00WEBPVP8 "), None),
    "jpeg": (_pad(b"\xff\xd8\xff\xe0\x00\x10JFIF"), None),
    "png": (_pad(b"\x89PNG\r\n\x1a\n"), None),
    "asf guid prefix only": (_pad(b"\x30\x26\xb2\x75\x00\x00\x00\x00"), None),  # probe took 4 bytes
    "ts sync byte not repeated": (b"G" + bytes(SNIFF_BYTES - 1), None),
    "zeros": (bytes(SNIFF_BYTES), None),
    "text": (_pad(b"hello, this is not a video"), None),
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_upload_sniffing_and_probe_agree_on_synthesised_headers(name: str, tmp_path: Path) -> None:
    head, expected = HEADERS[name]
    assert sniff_video_container(head) == expected
    path = tmp_path / "head.bin"
    path.write_bytes(head)
    assert looks_like_video_container(path) is (expected is not None)


def test_a_short_box_header_is_not_an_mp4() -> None:
    # The upload sniffing decided at 12 bytes before the table was shared; it still does.
    assert sniff_video_container(b"\x00\x00\x00\x08ftyp") is None
    assert sniff_video_container(b"\x00\x00\x00\x08ftypisom") == "mp4"


def test_animated_webp_is_told_from_a_still_one() -> None:
    animated = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x02" + bytes(40)
    still = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00" + bytes(40)
    assert is_animated_webp(animated) and not is_animated_webp(still)
    assert not is_animated_webp(b"RIFF\x00\x00\x00\x00WEBPVP8X")  # too short for the flags: no IndexError


def _header(
    stream_duration: int | None, time_base: Fraction | None, container_us: int | None
) -> tuple[SimpleNamespace, SimpleNamespace]:
    """Stand-ins for PyAV's container and video stream: only the fields the header reader looks at."""
    stream = SimpleNamespace(duration=stream_duration, time_base=time_base)
    return SimpleNamespace(duration=container_us), stream


@pytest.mark.parametrize(
    ("stream_duration", "time_base", "container_us", "expected"),
    [
        (250, Fraction(1, 25), 12_000_000, 10.0),  # the video stream's own duration wins over the container's
        (None, Fraction(1, 25), 12_000_000, 12.0),  # the stream states none (Matroska): the container's
        (0, Fraction(1, 25), 12_000_000, 12.0),  # zero is not a duration
        (250, None, 12_000_000, 12.0),  # no time base: the stream's count means nothing
        (250, Fraction(1, 25), None, 10.0),
        (0, Fraction(1, 25), 0, None),  # a file written live: None, so the caller scans the packets
        (None, None, None, None),
    ],
)
def test_header_duration_prefers_the_video_stream_then_the_container(
    stream_duration: int | None, time_base: Fraction | None, container_us: int | None, expected: float | None
) -> None:
    container, stream = _header(stream_duration, time_base, container_us)
    assert header_duration_s(container, stream) == expected


def test_gateway_check_and_probe_read_the_same_duration(synth_videos) -> None:
    for name in ("pan", "rotation270"):
        path = synth_videos[name].path
        gateway = video_duration_s(path)
        assert gateway is not None
        assert probe(path, max_bytes=10**9, max_duration_s=3600.0).info.duration_s == pytest.approx(
            gateway, abs=1e-4
        )
