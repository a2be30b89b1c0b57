"""Evidence images between their three forms: data URIs (pipeline), files (gateway, CLI), inlined (report).

WHY one module: the pipeline returns each track's images as ``data:`` URIs (preprocessor/evidence.py);
the gateway keeps them as files next to the job and lists their URLs, ``deepfake detect --evidence DIR``
writes the same files, and the HTML report inlines them again. All three agree on the file names here, so
a name in a result, a file on disk and an evidence URL always mean the same image.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

from deepfake.contracts.schemas import DetectionResult, Track

KINDS = ("thumbnail", "heatmap", "strip")
# The only names evidence files may have: checked before any name from a URL touches the file system.
NAME_PATTERN = re.compile(r"^track-(\d{1,6})-(thumbnail|heatmap|strip)\.jpg$")
DATA_PREFIX = "data:image/jpeg;base64,"


def evidence_name(track_id: int, kind: str) -> str:
    return f"track-{track_id}-{kind}.jpg"


def decode_data_uri(ref: str) -> bytes:
    if not ref.startswith(DATA_PREFIX):
        raise ValueError("not a JPEG data URI")
    return base64.b64decode(ref.removeprefix(DATA_PREFIX), validate=True)


def data_uri(jpeg: bytes) -> str:
    return DATA_PREFIX + base64.b64encode(jpeg).decode("ascii")


def _references(result: DetectionResult) -> Iterator[tuple[Track, str, str]]:
    """(track, kind, reference) of every image reference in ``result``."""
    for track in result.tracks:
        for kind in KINDS:
            ref = None if track.evidence is None else getattr(track.evidence, kind)
            if ref is not None:
                yield track, kind, ref


def externalise(result: DetectionResult, save: Callable[[str, bytes], str]) -> list[str]:
    """Replace every evidence data URI in ``result`` by what ``save(name, jpeg_bytes)`` returns (a URL or a
    path); returns the names saved. References that are not data URIs are left as they are."""
    saved: list[str] = []
    for track, kind, ref in list(_references(result)):
        if ref.startswith(DATA_PREFIX):
            name = evidence_name(track.id, kind)
            setattr(track.evidence, kind, save(name, decode_data_uri(ref)))
            saved.append(name)
    return saved


def inline(result: DetectionResult, load: Callable[[str], bytes | None]) -> DetectionResult:
    """A copy of ``result`` whose evidence references are data URIs again, read by ``load(name)`` (None:
    the image is gone and its reference becomes None, or the track's evidence when the thumbnail is)."""
    copy = result.model_copy(deep=True)
    for track, kind, ref in list(_references(copy)):
        if not ref.startswith(DATA_PREFIX):
            jpeg = load(evidence_name(track.id, kind))
            setattr(track.evidence, kind, None if jpeg is None else data_uri(jpeg))
    for track in copy.tracks:
        if track.evidence is not None and (track.evidence.thumbnail is None or track.evidence.strip is None):
            track.evidence = None
    return copy
