"""Fuzzing of the upload and probe path (issue 10): hostile bytes get a specific refusal, never a crash.

Hypothesis mutates small valid videos of five containers (MP4, Matroska, AVI/MJPEG, MPEG-TS, WebM/VP9):
overwritten, inserted and truncated bytes, anywhere or in the first 512 bytes where the headers are.
Each case goes through what the services run on an upload: the gateway's multipart receiver and its
duration check (``receive_upload``, ``check_duration``), then the preprocessor's probe, its memory
estimate and the frame sampler. The only exceptions allowed are the refusals (``UploadError``,
``VideoError``); a frame that comes out has the probed size. A second target fuzzes the multipart body
itself (boundaries, part headers, chunking).

Bounded: ``DEEPFAKE_FUZZ_EXAMPLES`` cases per target (default 1000, so about 2,000 in the test run) with a
fixed seed (the same cases every run, so CI is reproducible); ``make fuzz`` runs 5,000 per target from a
random seed (``DEEPFAKE_FUZZ_RANDOM=1``), and Hypothesis prints the failing input to reproduce it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deepfake.contracts.errors import ServiceError
from deepfake.uploads import UploadError, receive_upload
from gateway.video_check import check_duration, early_duration_check
from preprocessor.errors import VideoError
from preprocessor.probe import first_frame_format, probe
from preprocessor.sampling import FrameSampler, plan_windows
from tests import synth
from tests.settings import SuiteSettings

SUITE = SuiteSettings()
EXAMPLES = SUITE.fuzz_examples
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not SUITE.fuzz_random,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = {"max_bytes": 10 * 1024**2, "max_duration_s": 60.0}
BOUNDARY = "fuzzboundary7d1c"


def frames(n: int = 12, width: int = 64, height: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(n)]


# The seed videos' bytes, filled once per module (not a test argument: Hypothesis prints the arguments of
# a failing case, and these are kilobytes).
SEEDS: dict[str, bytes] = {}


@pytest.fixture(scope="module", autouse=True)
def seeds(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("fuzz_seeds")
    paths = {
        "mp4": synth.write_video(root / "s.mp4", frames(), gop=4),
        "mkv": synth.write_video(root / "s.mkv", frames(), gop=4),
        "avi": synth.write_video(root / "s.avi", frames(), codec="mjpeg", pix_fmt="yuvj420p"),
        "ts": synth.write_video(root / "s.ts", frames(), gop=4),
        "webm": synth.write_video(root / "s.webm", frames(), codec="libvpx-vp9"),
    }
    SEEDS.update({name: path.read_bytes() for name, path in paths.items()})


MUTATION = st.one_of(
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("header"), st.integers(0, 511), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
)


def mutate(data: bytes, mutations: list[tuple[str, float | int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, chunk in mutations:
        at = min(int(where), len(out)) if kind == "header" else int(float(where) * len(out))
        if kind in ("overwrite", "header"):
            out[at : at + len(chunk)] = chunk
        elif kind == "insert":
            out[at:at] = chunk
        else:
            del out[at:]
    return bytes(out)


def multipart(payload: bytes, filename: str = "clip.mp4") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{BOUNDARY}--\r\n".encode()


async def chunks(body: bytes, size: int):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def receive(body: bytes, folder: Path, chunk_size: int = 65536, content_type: str | None = None):
    """The gateway's receiving of one upload: multipart parsing to disk with the early duration check."""
    content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    return asyncio.run(
        receive_upload(
            content_type, chunks(body, chunk_size), folder, LIMITS["max_bytes"],
            early_duration_check(LIMITS["max_duration_s"], ""), read_timeout_s=5,
        )
    )  # fmt: skip


def analyse_start(path: Path) -> None:
    """What the services do with an accepted upload before the model: duration check, probe, memory
    estimate, then decoding the sampled frames. Raises only UploadError/VideoError."""
    check_duration(path, LIMITS["max_duration_s"], "")
    probed = probe(path, **LIMITS)
    first_frame_format(path, probed.max_frame_pixels)
    info = probed.info
    plan = plan_windows(info.duration_s, info.fps, 8, 4, 1)
    for window in FrameSampler(probed, plan, threads=1).windows():
        for frame in window:
            assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (info.height, info.width, 3)


@FUZZ
@given(
    seed=st.sampled_from(["mp4", "mkv", "avi", "ts", "webm"]),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
)
def test_mutated_videos_get_a_refusal_or_an_analysis_never_a_crash(seed, mutations):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        payload = mutate(SEEDS[seed], mutations)
        try:
            upload = receive(multipart(payload, f"clip.{seed}"), folder)
        except ServiceError as exc:  # an upload refusal, or the early duration check's too_long
            assert list(folder.iterdir()) == []  # a refused upload leaves nothing behind
            event(f"upload refused: {exc.code}")
            return
        assert upload.path.read_bytes() == payload
        try:
            analyse_start(upload.path)
        except (UploadError, VideoError) as exc:
            event(f"analysis refused: {exc.code}")  # a specific code, never internal_error
        else:
            event("analysed")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


PART_HEADER = st.sampled_from(
    [
        b'Content-Disposition: form-data; name="file"; filename="a.mp4"',
        b'Content-Disposition: form-data; name="file"',
        b'Content-Disposition: form-data; name="callback_url"',
        b"Content-Disposition: attachment",
        b"Content-Type: video/mp4",
        b'Content-Disposition: form-data; name="file"; filename="../../etc/passwd"',
        b'Content-Disposition: form-data; name="file"; filename="\xff\xfe.mp4"',
    ]
)


@FUZZ
@given(
    parts=st.lists(
        st.tuples(st.lists(PART_HEADER | st.binary(max_size=40), max_size=3), st.binary(max_size=300)),
        max_size=3,
    ),
    tail=st.sampled_from([b"--\r\n", b"--", b"", b"\r\n", b"garbage"]),
    chunk_size=st.integers(1, 512),
    content_type=st.sampled_from(
        [None, "multipart/form-data", "application/json", f"multipart/form-data; boundary={BOUNDARY}x"]
    ),
)
def test_malformed_multipart_bodies_are_refused_cleanly(parts, tail, chunk_size, content_type):
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + content + b"\r\n"
        for headers, content in parts
    )
    body += b"--" + BOUNDARY.encode() + tail
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        try:
            upload = receive(body, folder, chunk_size, content_type)
        except ServiceError as exc:  # an upload refusal, or the early duration check's too_long
            assert exc.http_status in (400, 413, 415, 422)
            assert list(folder.iterdir()) == []
            event(f"refused: {exc.code}")
            return
        assert [p.name for p in folder.iterdir()] == [upload.path.name]
        event("received")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- what the fuzzer found, kept as plain regression tests -------------------------------------------


def test_metadata_that_is_not_utf8_is_read_not_a_crash(tmp_path):
    # Was: UnicodeDecodeError from PyAV's metadata decoding in every av.open (a 500 for the upload).
    path = tmp_path / "title.mkv"
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "TITLEMARK"
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for rgb in frames(6):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    assert data.count(b"TITLEMARK") == 1
    path.write_bytes(data.replace(b"TITLEMARK", b"\x80\x81\x82\x83\x84\x85\x86\x87\x88"))
    analyse_start(path)
    assert probe(path, **LIMITS).info.width == 64


def test_a_body_that_ends_inside_the_file_part_is_bad_request(tmp_path):
    # Was: AssertionError (a 500) for an empty file part without its closing boundary.
    for content in (b"", b"\x00\x00\x00 ftypisom" + bytes(300)):
        body = multipart(content).removesuffix(f"\r\n--{BOUNDARY}--\r\n".encode())
        with pytest.raises(UploadError) as caught:
            receive(body, tmp_path, chunk_size=7)
        assert (caught.value.code, caught.value.http_status) == ("bad_request", 400)
        assert "ended inside the file part" in caught.value.message
        assert list(tmp_path.iterdir()) == []
