"""Receive a multipart video upload straight to disk, enforcing limits while the bytes arrive.

WHY not FastAPI's ``UploadFile``: it parses (and spools) the whole body before the endpoint runs, so a
10 GB upload is accepted in full before anyone can say 413. Here the body is parsed as it streams in:
the size limit aborts the upload at the first byte over it, the type is decided from the first bytes
(magic numbers, never the filename or the client's Content-Type), and the file is written under a
random name in a directory we choose (a client filename never becomes a path).

Both services receive uploads (the gateway from clients, the preprocessor from the gateway), so this
lives in the shared package rather than in either service folder.

Uploads that go wrong on the wire leave nothing behind: a body that stalls (no bytes for the read timeout)
ends with 408 ``upload_timeout``, a client that disconnects is logged in one line (no traceback), and in
both cases the partial file is deleted. Files a crash left behind are removed by
:func:`sweep_orphan_uploads` (both services run it on their folder at start and on a timer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from deepfake.containers import SNIFF_BYTES, is_animated_webp, sniff_video_container
from deepfake.contracts.errors import ServiceError

log = logging.getLogger(__name__)

EARLY_CHECK_BYTES = 1 << 20  # when the early check (if any) looks at the partial file
FILE_FIELD = "file"
UPLOAD_SUFFIX = ".upload"  # every file receive_upload writes is <32 hex digits>.upload
_UPLOAD_NAME = re.compile(r"[0-9a-f]{32}\.upload")
MAX_FIELD_BYTES = 4096
# The request body schema for OpenAPI, so Swagger UI shows a file picker although the endpoint reads
# the raw stream itself.
UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {"type": "string", "format": "binary", "description": "The video file."}
                    },
                }
            }
        },
    }
}


# Called once with (partial file, bytes so far) while the upload streams; raises UploadError to abort it.
EarlyCheck = Callable[[Path, int], None]


class UploadError(ServiceError):
    """A client-side upload problem: its code (the status from the catalogue) and the message that says
    what to fix."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(code, message, details)


class UploadTimeout(UploadError):
    """The body stalled: 408, and the connection is closed (the rest of the body is not awaited)."""

    headers = {"Connection": "close"}

    def __init__(self, read_timeout_s: float, received_bytes: int) -> None:
        super().__init__(
            "upload_timeout",
            f"no bytes of the upload arrived for {read_timeout_s:g} s, so it was cancelled; "
            "send the file again",
            read_timeout_s=read_timeout_s,
            received_bytes=received_bytes,
        )


class UploadDisconnected(UploadError):
    """The client went away mid-upload. Raised (after one log line) so the endpoint stops; the error
    handler's answer goes nowhere, and the request is counted with status 499."""

    def __init__(self, received_bytes: int) -> None:
        super().__init__(
            "client_disconnected",
            "the client disconnected before the upload was complete",
            received_bytes=received_bytes,
        )


def safe_display_name(filename: str | None) -> str | None:
    """The client's filename reduced to something safe to echo back (never used as a path)."""
    if not filename:
        return None
    name = re.split(r"[\\/]", filename)[-1]
    name = re.sub(r"[^\w.\- ()]", "_", name)[:200]
    return name or None


@dataclass
class Upload:
    """A received upload on disk; the caller owns `path` and must delete it."""

    path: Path
    filename: str | None
    size: int
    container: str
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    """Callbacks for python-multipart's streaming parser: one file part to disk, small text fields."""

    def __init__(self, dest: Path, max_bytes: int, early_check: EarlyCheck | None = None) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.early_check = early_check
        self._early_checked = False
        self.fields: dict[str, str] = {}
        self.size = 0
        self.filename: str | None = None
        self.container: str | None = None
        self.file_seen = False
        self.file_complete = False  # the file part's closing boundary arrived
        self._head = b""
        self._handle: BinaryIO | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part_name: str | None = None
        self._part_is_file = False
        self._field_value = bytearray()

    def callbacks(self) -> Any:  # python-multipart's MultipartCallbacks (a TypedDict of these keys)
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._extend("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._extend("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _extend(self, name: str, chunk: bytes) -> None:
        setattr(self, name, getattr(self, name) + chunk)

    def _part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._part_is_file = False
        self._field_value = bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        self._part_name = name.decode("utf-8", "replace") if name is not None else None
        self._part_is_file = self._part_name == FILE_FIELD
        if self._part_is_file:
            if self.file_seen:
                raise UploadError("bad_request", "send exactly one file part named 'file'")
            self.file_seen = True
            raw = options.get(b"filename")
            self.filename = safe_display_name(raw.decode("utf-8", "replace") if raw is not None else None)
            self._handle = self.dest.open("wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._part_is_file:
            self._field_value.extend(chunk)
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise UploadError("bad_request", f"form field {self._part_name!r} is too long")
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise UploadError(
                "too_large",
                f"the upload exceeds the limit of {self.max_bytes} bytes; send a shorter or smaller video",
                max_bytes=self.max_bytes,
            )
        if self.container is None:
            self._head += chunk[:SNIFF_BYTES]
            if len(self._head) >= SNIFF_BYTES:
                self._decide_type()
        assert self._handle is not None
        self._handle.write(chunk)
        if self.early_check is not None and not self._early_checked and self.size >= EARLY_CHECK_BYTES:
            # Once: files whose index comes first (MP4 "faststart", MKV) tell their duration from the
            # first megabyte, so an over-long video is refused before the rest is uploaded.
            self._early_checked = True
            self._handle.flush()
            self.early_check(self.dest, self.size)

    def _decide_type(self) -> None:
        self.container = sniff_video_container(self._head)
        if self.container is None and is_animated_webp(self._head):
            raise UploadError(  # the preprocessor's code and advice for the same file (preprocessor.probe)
                "animated_image",
                "this is an animated WebP image, and its frames cannot be decoded here as video; "
                "export or convert it to a video file (MP4 or WebM) and provide that",
            )
        if self.container is None:
            raise UploadError(
                "not_a_video",
                "not a video container we can read (MP4/MOV, MKV/WebM, AVI, FLV, Ogg, WMV, MPEG, "
                "raw H.264/HEVC); the type is judged from the bytes, not the filename",
            )

    def _part_end(self) -> None:
        if self._part_is_file:
            self.file_complete = True
            if self.container is None:
                if self.size == 0:
                    raise UploadError("empty_file", "the uploaded file is empty")
                self._decide_type()
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        elif self._part_name is not None:
            # Two values for one field (say two callback_url parts): which one counts would be a guess,
            # and a guess that drops a callback silently (found by schemathesis).
            if self._part_name in self.fields:
                raise UploadError("bad_request", f"form field {self._part_name!r} sent more than once")
            self.fields[self._part_name] = self._field_value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_upload(
    content_type: str | None,
    stream: AsyncIterator[bytes],
    upload_dir: Path,
    max_bytes: int,
    early_check: EarlyCheck | None = None,
    read_timeout_s: float | None = None,
) -> Upload:
    """Parse a multipart/form-data body from `stream` into `upload_dir`; raise UploadError on bad input,
    UploadTimeout when no bytes arrive for `read_timeout_s` (None: wait forever), UploadDisconnected when
    the client goes away. Nothing is left on disk unless an Upload is returned."""
    mime, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise UploadError(
            "bad_request",
            "send the video as multipart/form-data with a part named 'file' (curl -F file=@clip.mp4)",
        )
    upload_dir.mkdir(parents=True, exist_ok=True)
    dest = upload_dir / f"{uuid.uuid4().hex}{UPLOAD_SUFFIX}"
    receiver = _Receiver(dest, max_bytes, early_check)
    parser = MultipartParser(boundary, receiver.callbacks())
    chunks = aiter(stream)
    received = 0
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), read_timeout_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadTimeout(read_timeout_s or 0.0, received) from None
            received += len(chunk)
            # On a thread: the parser's callbacks write the file and may run the early duration check
            # (PyAV reads the partial file), blocking I/O the event loop must not wait on.
            await asyncio.to_thread(parser.write, chunk)
        await asyncio.to_thread(parser.finalize)
        if not receiver.file_seen:
            raise UploadError("bad_request", "no file part named 'file' in the upload")
        if not receiver.file_complete:  # cut short: what arrived may be any prefix of the file
            raise UploadError(
                "bad_request", "the body ended inside the file part (no closing boundary); send it whole"
            )
    except MultipartParseError as exc:
        receiver.close()
        dest.unlink(missing_ok=True)
        raise UploadError("bad_request", f"malformed multipart body: {exc}") from exc
    except ClientDisconnect:
        receiver.close()
        dest.unlink(missing_ok=True)
        log.info("upload cancelled: client disconnected after %d bytes (partial file removed)", received)
        raise UploadDisconnected(received) from None
    except UploadTimeout:
        receiver.close()
        dest.unlink(missing_ok=True)
        log.info("upload cancelled: no bytes for %g s after %d bytes (partial file removed)",
                 read_timeout_s, received)  # fmt: skip
        raise
    except BaseException:
        receiver.close()
        dest.unlink(missing_ok=True)
        raise
    receiver.close()
    assert receiver.container is not None
    return Upload(dest, receiver.filename, receiver.size, receiver.container, receiver.fields)


class UploadSpoolSettings(BaseModel):
    """The upload rules both services apply to the files they spool (read timeout, orphan sweep), with
    the same variable names and defaults; each service's settings class inherits them."""

    upload_read_timeout_s: float = Field(
        20.0, gt=0, description="An upload whose body sends no bytes for this long ends with 408."
    )
    upload_orphan_age_s: float = Field(
        3600.0,
        gt=0,
        description="Spooled upload files nothing references are deleted once this old (what a crash "
        "left behind); longer than any analysis, queue wait included (the gateway: above "
        "PREPROCESSOR_TIMEOUT_S).",
    )
    upload_sweep_interval_s: float = Field(300.0, gt=0, description="How often orphaned uploads are swept.")


def sweep_orphan_uploads(
    upload_dir: Path, older_than_s: float, keep: Iterable[str | Path] = (), now: float | None = None
) -> list[Path]:
    """Delete the upload files in `upload_dir` (only names receive_upload writes) last modified more than
    `older_than_s` ago, except those in `keep` (e.g. the uploads of queued jobs); returns what was removed.

    WHY by age as well: a file being received (its mtime moves with every write) or analysed right now
    by a synchronous request is referenced by no job; the age must exceed the longest such request."""
    if not upload_dir.is_dir():
        return []
    kept = {os.path.realpath(path) for path in keep}
    cutoff = (time.time() if now is None else now) - older_than_s
    removed: list[Path] = []
    for path in upload_dir.iterdir():
        if not _UPLOAD_NAME.fullmatch(path.name) or os.path.realpath(path) in kept:
            continue
        try:
            if not path.is_file() or path.stat().st_mtime > cutoff:
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (a job finished)
        removed.append(path)
    return removed


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
