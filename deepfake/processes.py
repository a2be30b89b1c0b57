"""The one process runner: start a command in its own session with its log in a file, wait until it is
ready, stop it (the whole process group, SIGTERM then SIGKILL) or kill it and everything below it.

WHY one: ``make up`` (cli.local_stack), ``deepfake serve triton`` (inference.triton_launcher), the
benchmarks and the tests each started real processes and polled them with their own loops, timeouts and
stop rules; one class keeps them the same (issue 13). Linux only (process groups, /proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ProcessNotReady(RuntimeError):
    """The process exited, or did not get ready in time; the message ends with its log's tail."""


def http_ready(url: str, timeout_s: float = 2.0) -> Callable[[], bool]:
    """A readiness check: `url` answers 200 (anything else, or no answer, is not ready yet)."""

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return ready


@dataclass
class ManagedProcess:
    name: str
    command: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    poll_s: float = 0.25
    # What wait_ready raises: a caller's own error type (e.g. TritonLaunchError) keeps its callers' handling.
    not_ready: type[Exception] = ProcessNotReady
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the command in a session of its own (so a stop reaches its whole group), appending its
        output to the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=dict(self.env) if self.env is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Return once `ready()` says so; raise `not_ready` when the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise self.not_ready(
                    f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(self.poll_s)
        raise self.not_ready(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def start_and_wait(self, timeout_s: float) -> None:
        """start() and wait_ready(); a process that does not get ready is stopped before the error."""
        self.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL after `timeout_s`; nothing when it is not running."""
        if self.popen is not None and self.popen.poll() is None:
            stop_pid(self.popen.pid, timeout_s)
            self.popen.wait()

    def kill(self) -> None:
        """SIGKILL the process group and every process below it: a crash, for recovery tests. The
        descendants too, because a child may have started a session of its own (tritonserver)."""
        if self.popen is not None and self.popen.poll() is None:
            below = descendants(self.popen.pid)
            os.killpg(self.popen.pid, signal.SIGKILL)
            for pid in below:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.popen.wait()

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def poll(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def wait(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def stop_pid(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group we started (its leader handles it), SIGKILL after the timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
