"""The one table of video container signatures (magic bytes), and the sniffers built on it.

It also holds the one reader of the duration a container header states (:func:`header_duration_s`),
used by the gateway's quick check and by the probe.

WHY one table: the gateway's upload sniffing (:mod:`deepfake.uploads`, which answers 415 for a file that
is not a video) and the preprocessor's probe (:mod:`preprocessor.probe`, which tells a broken video
``corrupt_video`` from something that never was one ``not_a_video``) must agree on what "starts like a
video" means; two lists had drifted apart. This module imports nothing but the standard library, so
every package (shared contracts, gateway, preprocessor, CLI) may import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyAV objects are only passed in: importing this module stays free of av
    from av.container import InputContainer
    from av.video.stream import VideoStream

SNIFF_BYTES = 256  # enough for every signature below (MPEG-TS needs byte 188)

# ISO BMFF / QuickTime top-level boxes a file may start with (MP4, MOV, 3GP, M4V); ``pnot`` is the
# QuickTime preview atom old .mov files begin with.
MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


@dataclass(frozen=True)
class Signature:
    """A container is recognised when every ``(offset, bytes)`` part matches and the head is at least
    ``min_len`` bytes long."""

    container: str
    parts: tuple[tuple[int, bytes], ...]
    min_len: int = 0

    def matches(self, head: bytes) -> bool:
        if len(head) < self.min_len:
            return False
        return all(head[offset : offset + len(part)] == part for offset, part in self.parts)


# First match wins. MPEG-TS and raw H.264/HEVC streams are recognised by code below (a sync byte that
# repeats every 188 bytes; NAL unit headers), not by fixed bytes.
SIGNATURES: tuple[Signature, ...] = (
    *(Signature("mp4", ((4, box),), min_len=12) for box in MP4_BOXES),
    Signature("matroska", ((0, b"\x1a\x45\xdf\xa3"),)),  # MKV, WebM
    Signature("avi", ((0, b"RIFF"), (8, b"AVI "))),  # RIFF also holds WAV and WebP: only AVI is a video
    Signature("flv", ((0, b"FLV"),)),
    Signature("ogg", ((0, b"OggS"),)),
    Signature("asf", ((0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),)),  # WMV: the ASF header object's GUID
    Signature("mpeg", ((0, b"\x00\x00\x01\xba"),)),  # MPEG program stream (pack header)
    Signature("mpeg", ((0, b"\x00\x00\x01\xb3"),)),  # MPEG-1/2 video (sequence header)
)

_TS_SYNC = 0x47
_TS_PACKET = 188


def sniff_video_container(head: bytes) -> str | None:
    """The container family from the first bytes (pass :data:`SNIFF_BYTES` of them), or None when they
    are not a video container we know."""
    for signature in SIGNATURES:
        if signature.matches(head):
            return signature.container
    if head[:1] == bytes([_TS_SYNC]) and (len(head) <= _TS_PACKET or head[_TS_PACKET] == _TS_SYNC):
        return "mpegts"
    return _sniff_annex_b(head)


# NAL unit types a raw stream may start with (an access unit delimiter, parameter sets, SEI).
_H264_FIRST_NALS = {6: False, 7: True, 8: True, 9: False}  # type -> nal_ref_idc must be non-zero
_HEVC_FIRST_NALS = {32, 33, 34, 35, 39}  # VPS, SPS, PPS, AUD, prefix SEI


def _sniff_annex_b(head: bytes) -> str | None:
    """A raw H.264 or HEVC elementary stream (Annex B byte stream, no container: what encoders and
    cameras write as .h264/.264/.h265): zero bytes, a start code ``00 00 01`` (so ``00 00 00 01`` too),
    then the header of a NAL unit a stream begins with. The MPEG program/sequence start codes (``00 00 01
    BA``/``B3``) have the forbidden bit set and never match."""
    start = len(head) - len(head.lstrip(b"\x00"))
    if start < 2 or start + 3 > len(head) or head[start] != 0x01:
        return None
    first, second = head[start + 1], head[start + 2]
    if first & 0x80:  # forbidden_zero_bit
        return None
    nal_type, ref_idc = first & 0x1F, first >> 5
    if nal_type in _H264_FIRST_NALS and _H264_FIRST_NALS[nal_type] == (ref_idc != 0):
        return "h264"
    # HEVC: a two-byte header, layer 0 and a temporal id of at least 1 (nuh_temporal_id_plus1).
    if (first >> 1) & 0x3F in _HEVC_FIRST_NALS and not first & 0x01 and not second & 0xF8 and second & 0x07:
        return "hevc"
    return None


def is_animated_webp(head: bytes) -> bool:
    """RIFF/WEBP with a VP8X header whose animation flag is set (or an ANIM chunk up front). Still WebP
    images stay ``not_a_video``."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    return (head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)) or b"ANIM" in head[:64]


def header_duration_s(container: InputContainer, stream: VideoStream) -> float | None:
    """The duration in seconds the header states for ``stream`` (a video stream of ``container``), or
    None when it states none, so the caller measures the packets instead.

    WHY this order: the video stream's own duration first, because the container's is the longest of all
    its streams (an audio track that runs on past the picture would count); the container's only when
    the stream states none (Matroska/WebM keep it at segment level). Zero or negative counts as not
    stated: a file written live says 0, and taking that at face value would skip the packet scan."""
    if stream.duration is not None and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE: microseconds
    return None
