"""The one process runner (deepfake.processes) with real processes on loopback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cli.local_stack import free_port
from deepfake.processes import ManagedProcess, ProcessNotReady, descendants, http_ready


def http_server(tmp_path: Path) -> ManagedProcess:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    ready = http_ready(f"http://127.0.0.1:{port}/", timeout_s=1.0)
    return ManagedProcess(
        "http.server", command, tmp_path / "logs" / "server.log", ready, cwd=tmp_path, poll_s=0.05
    )


def test_starts_waits_until_ready_and_stops(tmp_path):
    server = http_server(tmp_path)
    assert not server.ready()
    with server:
        server.start_and_wait(30)
        assert server.ready() and server.poll() is None
    assert server.poll() is not None and not server.ready()  # stopped on leaving the block
    assert "GET / HTTP" in server.log_path.read_text()  # its output went to the log


def test_a_process_that_exits_is_reported_with_its_code_and_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    process = ManagedProcess("broken", command, tmp_path / "broken.log", lambda: False, poll_s=0.05)
    with pytest.raises(ProcessNotReady, match=r"broken exited with code 3:\nno model here"):
        process.start_and_wait(30)


def test_a_process_that_never_gets_ready_is_stopped_after_the_timeout(tmp_path):
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = ManagedProcess("slow", command, tmp_path / "slow.log", lambda: False, poll_s=0.05)
    start = time.monotonic()
    with pytest.raises(ProcessNotReady, match="slow not ready after 1 s"):
        process.start_and_wait(1.0)
    assert time.monotonic() - start < 20 and process.poll() is not None


def test_kill_reaches_a_grandchild_in_a_session_of_its_own(tmp_path):
    """As `deepfake serve triton` does with tritonserver: the child starts its own session."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
        "print('started', flush=True); time.sleep(60)"
    )
    log = tmp_path / "parent.log"
    process = ManagedProcess(
        "parent", [sys.executable, "-c", code], log, lambda: "started" in log.read_text()
    )
    process.start_and_wait(30)
    deadline = time.monotonic() + 10
    while not (below := descendants(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert below
    process.kill()
    time.sleep(0.2)
    assert process.poll() is not None
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in below)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_caller_chooses_the_error_type(tmp_path):
    class LaunchError(RuntimeError):
        pass

    command = [sys.executable, "-c", "raise SystemExit(2)"]
    log = tmp_path / "x.log"
    process = ManagedProcess("x", command, log, lambda: False, poll_s=0.05, not_ready=LaunchError)
    with pytest.raises(LaunchError, match="x exited with code 2"):
        process.start_and_wait(30)
