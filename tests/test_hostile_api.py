"""A hostile-input suite over the HTTP API and the CLI (issue 10): each case its specific answer.

Every case is generated at test time (tests/synth.py and the helpers below) and sent to the real gateway
with the real preprocessor behind it (in-process, ONNX Runtime backend) as a client would: files of every
kind and state, malformed multipart bodies, odd file names, missing or wrong keys. Each asserts its status
and error code (or a verdict), that the gateway still answers its health check, and that no upload file
is left behind in either service's folder. The same files then go through `deepfake detect --json` in one
process: the same code for each (or a verdict where only the services' limits refuse it), no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepfake.settings import REPO_ROOT
from tests import synth
from tests.test_gateway import KEY, make_gateway

MAX_UPLOAD_BYTES = 3 * 1024**2


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]  # writes the file under the folder, returns it
    status: int
    code: str | None  # None: analysed, the answer has a verdict
    filename: str | None = None  # the name the client sends (default: the file's)
    cli: str | None | bool = True  # the CLI's code: True the same as `code`; the services' limits differ


def frames(n: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def raw(data: bytes, suffix: str = ".mp4") -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        path = root / f"raw_{zlib.crc32(data):08x}{suffix}"
        path.write_bytes(data)
        return path

    return build


def video(name: str, **kwargs) -> Callable[[Path], Path]:
    options = {k: v for k, v in kwargs.items() if k != "n"}

    def build(root: Path) -> Path:
        return synth.write_video(root / name, frames(kwargs.get("n", 12)), **options)

    return build


def face(name: str, **kwargs) -> Callable[[Path], Path]:
    return lambda root: synth.write_face_video(root / name, **kwargs).path


def truncated(fraction: float, name: str = "t.mp4") -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        source = synth.write_face_video(root / f"src_{name}", n_frames=30, width=160, height=96).path
        return synth.write_truncated_copy(source, root / f"trunc_{fraction}_{name}", fraction)

    return build


def corrupt_middle(name: str) -> Callable[[Path], Path]:
    """Noise over the middle third of a valid file: headers intact, frames damaged."""

    def build(root: Path) -> Path:
        path = synth.write_face_video(root / f"mid_{name}", n_frames=40, width=160, height=96, gop=5).path
        data = bytearray(path.read_bytes())
        start, end = len(data) // 3, 2 * len(data) // 3
        data[start:end] = np.random.default_rng(1).bytes(end - start)
        path.write_bytes(bytes(data))
        return path

    return build


def low_fps_long(seconds: int) -> Callable[[Path], Path]:
    return lambda root: synth.write_video(root / f"long_{seconds}.mp4", frames(seconds), fps=1.0)


def big_file(root: Path) -> Path:
    path = root / "big.mp4"
    data = synth.write_face_video(root / "big_src.mp4", n_frames=10).path.read_bytes()
    path.write_bytes(data + bytes(MAX_UPLOAD_BYTES))  # a valid video followed by padding: over the limit
    return path


CASES: dict[str, Case] = {
    # Not a video at all: judged from the bytes, whatever the name says.
    "jpeg named mp4": Case(lambda r: synth.write_jpeg_named_mp4(r / "photo.mp4"), 415, "not_a_video"),
    "png": Case(raw(b"\x89PNG\r\n\x1a\n" + bytes(2000)), 415, "not_a_video"),
    "gif": Case(raw(b"GIF89a" + bytes(2000)), 415, "not_a_video"),
    "pdf": Case(raw(b"%PDF-1.7\n" + b"1 0 obj\n" * 300), 415, "not_a_video"),
    "zip": Case(raw(b"PK\x03\x04" + bytes(2000)), 415, "not_a_video"),
    "gzip": Case(raw(zlib.compress(bytes(100_000))), 415, "not_a_video"),
    "zip bomb-like deflate stream": Case(
        raw(b"\x1f\x8b\x08\x00" + zlib.compress(bytes(10**7), 9)), 415, "not_a_video"
    ),
    "elf binary": Case(raw(b"\x7fELF\x02\x01\x01" + bytes(4000)), 415, "not_a_video"),
    "html": Case(raw(b"<!doctype html><html><body>" + b"x" * 3000), 415, "not_a_video"),
    "json": Case(raw(b'{"video": "' + b"A" * 3000 + b'"}'), 415, "not_a_video"),
    "random bytes": Case(lambda r: synth.write_random_bytes(r / "noise.mp4"), 415, "not_a_video"),
    "wav audio": Case(raw(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(4000), ".wav"), 415, "not_a_video"),
    "animated webp": Case(lambda r: synth.write_animated_webp(r / "anim.webp"), 415, "animated_image"),
    # Empty, or no video inside.
    "empty file": Case(lambda r: synth.write_empty_file(r / "empty.mp4"), 400, "empty_file"),
    "audio-only mp4": Case(lambda r: synth.write_audio_only(r / "audio.mp4"), 415, "no_video_stream"),
    "audio-only mkv": Case(lambda r: synth.write_audio_only(r / "audio.mkv"), 415, "no_video_stream"),
    "zero-frame mkv": Case(lambda r: synth.write_zero_frame_video(r / "zero.mkv"), 422, "zero_frames"),
    # Broken containers.
    "mp4 cut at 5 %": Case(truncated(0.05), 422, "corrupt_video"),
    "mp4 cut at 30 %": Case(truncated(0.3), 422, "corrupt_video"),
    "mp4 header only": Case(
        raw(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"), 422, "corrupt_video"
    ),
    "mkv header only": Case(raw(b"\x1a\x45\xdf\xa3" + bytes(60), ".mkv"), 422, "corrupt_video"),
    "avi header only": Case(raw(b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(100), ".avi"), 422, "corrupt_video"),
    # Frame sizes: too small or thin to hold a face, or too large to decode.
    "1x1": Case(lambda r: synth.write_tiny_video(r / "1x1.mp4", 1, 1), 422, "frame_too_small"),
    "4x4": Case(lambda r: synth.write_tiny_video(r / "4x4.mp4", 4, 4), 422, "frame_too_small"),
    "16x16": Case(lambda r: synth.write_tiny_video(r / "16x16.mp4", 16, 16), 422, "frame_too_small"),
    "31x200": Case(lambda r: synth.write_tiny_video(r / "31x200.mp4", 31, 200), 422, "frame_too_small"),
    "90x8000": Case(lambda r: synth.write_tiny_video(r / "90x8000.mp4", 90, 8000, 2), 422, "frame_too_small"),
    "8000x90": Case(lambda r: synth.write_tiny_video(r / "8000x90.mp4", 8000, 90, 2), 422, "frame_too_small"),
    "declared 16000x16000": Case(
        lambda r: synth.write_huge_declared_mjpeg(r / "huge.mkv"), 413, "too_large_frame"
    ),
    "declared 8000x8000": Case(
        lambda r: synth.write_huge_declared_mjpeg(r / "h8.mkv", 8000, 8000), 413, "too_large_frame"
    ),
    "declared 7681x4321": Case(
        lambda r: synth.write_huge_declared_mjpeg(r / "h7.mkv", 7681, 4321), 413, "too_large_frame"
    ),
    # Durations and sizes over the limits.
    "130 s over the sync limit": Case(low_fps_long(130), 413, "too_long", cli=None),  # the CLI's is 600 s
    "streamed mkv, no duration, 11 min": Case(
        lambda r: synth.write_streamed_mkv(r / "streamed.mkv", n_frames=660 * 2, fps=2.0), 413, "too_long"
    ),
    "upload over the size limit": Case(big_file, 413, "too_large", cli=None),  # the CLI's is 2 GiB
    # Valid videos in many shapes: analysed.
    "mp4 h264": Case(face("ok.mp4", n_frames=20), 200, None),
    "mov rotation 90": Case(face("rot90.mov", n_frames=20, rotation=90), 200, None),
    "mp4 rotation 270": Case(face("rot270.mp4", n_frames=20, rotation=270), 200, None),
    "variable frame rate": Case(face("vfr.mp4", n_frames=20, variable_fps=True), 200, None),
    "mkv": Case(video("ok.mkv"), 200, None),
    "webm vp9": Case(video("ok.webm", codec="libvpx-vp9"), 200, None),
    "avi mjpeg": Case(video("ok.avi", codec="mjpeg", pix_fmt="yuvj420p"), 200, None),
    "mpeg-ts": Case(video("ok.ts"), 200, None),
    "4:4:4 odd size": Case(video("odd.mp4", n=8, pix_fmt="yuv444p"), 200, None),
    "two video streams": Case(lambda r: synth.write_two_video_streams(r / "two.mkv", n_frames=12), 200, None),
    "with an audio track": Case(video("with_audio.mp4", audio=True), 200, None),
    "one frame": Case(video("one.mp4", n=1), 200, None),
    "long gop": Case(video("gop.mp4", n=40, gop=40), 200, None),
    "corrupt middle": Case(corrupt_middle("cm.mp4"), 200, None),
    "mp4 cut at 90 %: its index is at the end": Case(truncated(0.9), 422, "corrupt_video"),
    "mkv cut at 90 %": Case(truncated(0.9, "t.mkv"), 200, None),
    # Names a client may send: kept out of paths, shown safely.
    "path traversal name": Case(face("n1.mp4", n_frames=12), 200, None, "../../../etc/passwd.mp4"),
    "windows path name": Case(face("n2.mp4", n_frames=12), 200, None, "C:\\Users\\x\\clip.mp4"),
    "unicode name": Case(face("n3.mp4", n_frames=12), 200, None, "видео 🎬.mp4"),
    "300-character name": Case(face("n4.mp4", n_frames=12), 200, None, "a" * 296 + ".mp4"),
    "name with quotes and markup": Case(face("n5.mp4", n_frames=12), 200, None, '<b>"x"</b>;.mp4'),
    "no extension": Case(face("n6.mp4", n_frames=12), 200, None, "clip"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile_api")
    return {name: case.build(root) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_model_path, default_detector):
    root = tmp_path_factory.mktemp("hostile_service")
    with make_gateway(root, random_model_path, max_upload_bytes=MAX_UPLOAD_BYTES) as client:
        client.headers["X-API-Key"] = KEY
        yield client, root


def assert_healthy_and_clean(client, root: Path) -> None:
    assert client.get("/healthz").status_code == 200
    for folder in ("uploads", "pp_uploads"):
        left = list((root / folder).glob("*")) if (root / folder).exists() else []
        assert left == [], f"files left in {folder}: {left}"


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_file_gets_its_answer(service, files, name):
    client, root = service
    case = CASES[name]
    path = files[name]
    with path.open("rb") as handle:
        filename = case.filename or path.name
        response = client.post(
            "/v1/detections", files={"file": (filename, handle, "application/octet-stream")}
        )
    assert response.status_code == case.status, response.text[:500]
    body = response.json()
    if case.code is None:
        assert body["verdict"] in ("real", "fake", "inconclusive"), body
        if case.filename is not None:  # a display name only: no directory, no markup
            assert "/" not in body["path"] and "\\" not in body["path"] and "<" not in body["path"]
    else:
        assert body["error"]["code"] == case.code, body
        assert "Traceback" not in response.text
    assert_healthy_and_clean(client, root)


BOUNDARY = "hostileboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(headers: str, content: bytes) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"


FILE_HEADER = 'Content-Disposition: form-data; name="file"; filename="a.mp4"'
END = f"--{BOUNDARY}--\r\n".encode()
CLIP = synth.encode_to_bytes(frames(3))
BODIES: dict[str, tuple[str | None, bytes, int, str]] = {
    "no content type": (None, part(FILE_HEADER, b"x" * 100) + END, 400, "bad_request"),
    "json content type": ("application/json", b'{"file": "x"}', 400, "bad_request"),
    "multipart without boundary": ("multipart/form-data", part(FILE_HEADER, b"x") + END, 400, "bad_request"),
    "no file part": (
        MULTIPART,
        part('Content-Disposition: form-data; name="other"', b"x") + END,
        400,
        "bad_request",
    ),
    "two file parts": (
        MULTIPART,
        part(FILE_HEADER, CLIP) + part(FILE_HEADER, CLIP) + END,
        400,
        "bad_request",
    ),
    "a text field twice": (
        MULTIPART,
        part(FILE_HEADER, CLIP)
        + part('Content-Disposition: form-data; name="callback_url"', b"")
        + part('Content-Disposition: form-data; name="callback_url"', b"https://example.org/hook")
        + END,
        400,
        "bad_request",
    ),
    "body ends inside the file part": (
        MULTIPART,
        part(FILE_HEADER, b"").removesuffix(b"\r\n"),
        400,
        "bad_request",
    ),
    "garbage instead of multipart": (MULTIPART, np.random.default_rng(3).bytes(5000), 400, "bad_request"),
    "oversized text field": (
        MULTIPART,
        part('Content-Disposition: form-data; name="callback_url"', b"h" * 100_000) + END,
        400,
        "bad_request",
    ),
    "empty body": (MULTIPART, b"", 400, "bad_request"),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_malformed_body_is_bad_request(service, name):
    client, root = service
    content_type, body, status, code = BODIES[name]
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/detections", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text[:300]
    assert_healthy_and_clean(client, root)


@pytest.mark.parametrize("key", ["", "wrong", KEY + "x"])
def test_a_missing_or_wrong_key_is_unauthorized(service, files, key):
    client, root = service
    with files["mp4 h264"].open("rb") as handle:
        response = client.post(
            "/v1/detections", files={"file": ("a.mp4", handle)}, headers={"X-API-Key": key}
        )
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
    assert_healthy_and_clean(client, root)


def test_the_cli_gives_each_file_the_same_answer(files, random_model_path, default_detector):
    names = list(CASES)
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "detect", "--json", "--no-progress", "--threads", "1",
         "--model", str(random_model_path), *(str(files[name]) for name in names)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == [str(files[name]) for name in names]
    for name, line in zip(names, lines, strict=True):
        case = CASES[name]
        expected = case.code if case.cli is True else case.cli
        got = line["error"]["code"] if "error" in line else None
        assert got == expected, (name, line)
        if expected is None:
            assert line["verdict"] in ("real", "fake", "inconclusive"), (name, line)
