"""The whole stack as local processes: Triton, the preprocessor and the gateway, on loopback.

WHY: `make up`/`make down`, `make bench-services` and the integration tests all need the three services
started for real (no Docker engine here), each waited for until ready, with logs in files. One class does
it so they all start the stack the same way, exactly as the service contract says:
`deepfake serve triton` and `uvicorn --factory <service>.app:create_app`.

    python -m cli.local_stack up      # start, wait until ready, print URLs (PIDs in .run/pids/)
    python -m cli.local_stack down    # stop what `up` started
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deepfake.processes import ManagedProcess, http_ready, stop_pid
from deepfake.settings import REPO_ROOT

SERVICES = ("triton", "preprocessor", "gateway")


def free_port() -> int:
    """A port that is free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Ports:
    triton_http: int = 8000
    triton_grpc: int = 8001
    triton_metrics: int = 8002
    preprocessor: int = 8081
    gateway: int = 8080

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass
class LocalStack:
    run_dir: Path
    repository: Path = REPO_ROOT / "model_repository"
    ports: Ports = field(default_factory=Ports)
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)  # extra DEEPFAKE_* settings for both services
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return {
            "triton": f"http://127.0.0.1:{self.ports.triton_http}",
            "preprocessor": f"http://127.0.0.1:{self.ports.preprocessor}",
            "gateway": f"http://127.0.0.1:{self.ports.gateway}",
        }

    @property
    def ready_urls(self) -> dict[str, str]:
        return {
            "triton": f"{self.urls['triton']}/v2/models/deepfake_detector/ready",
            "preprocessor": f"{self.urls['preprocessor']}/readyz",
            "gateway": f"{self.urls['gateway']}/readyz",
        }

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
                "DEEPFAKE_TRITON_URL": f"127.0.0.1:{self.ports.triton_grpc}",
                "DEEPFAKE_PREPROCESSOR_URL": self.urls["preprocessor"],
                "DEEPFAKE_JOB_STORE_URL": f"sqlite:///{(self.run_dir / 'jobs.sqlite').resolve()}",
                "DEEPFAKE_UPLOAD_DIR": str((self.run_dir / "uploads").resolve()),
                "DEEPFAKE_EVIDENCE_DIR": str((self.run_dir / "evidence").resolve()),
                "DEEPFAKE_API_KEYS": self.api_key,
            }
        )
        env.update(self.env)
        return env

    def command(self, name: str) -> list[str]:
        if name == "triton":
            return [
                sys.executable, "-m", "cli.main", "serve", "triton",
                "--repository", str(self.repository), "--run-dir", str(self.run_dir / "triton"),
                "--port", str(self.ports.triton_http), "--grpc-port", str(self.ports.triton_grpc),
                "--metrics-port", str(self.ports.triton_metrics),
            ]  # fmt: skip
        port = self.ports.preprocessor if name == "preprocessor" else self.ports.gateway
        return [
            sys.executable, "-m", "uvicorn", "--factory", f"{name}.app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        env = self.service_env()
        if name == "preprocessor":  # its own spool: its orphan sweep must not see the gateway's queued files
            env["DEEPFAKE_UPLOAD_DIR"] = str((self.run_dir / "preprocessor-uploads").resolve())
        env.update(extra_env or {})
        ready = http_ready(self.ready_urls[name], timeout_s=5.0)
        process = ManagedProcess(name, self.command(name), self.log_path(name), ready, env, REPO_ROOT, 0.3)
        process.start()
        self.processes[name] = process

    def wait_ready(self, name: str, timeout_s: float = 180.0) -> None:
        self.processes[name].wait_ready(timeout_s)

    def log_tail(self, name: str, lines: int = 40) -> str:
        process = self.processes.get(name)
        return process.log_tail(lines) if process is not None else "(not started)"

    def up(self, timeout_s: float = 180.0) -> None:
        for name in SERVICES:
            self.start(name)
            self.wait_ready(name, timeout_s)

    def stop(self, name: str, timeout_s: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop(timeout_s)

    def kill(self, name: str) -> None:
        """SIGKILL the service and every process below it: a crash, for recovery tests (`deepfake serve
        triton` starts tritonserver in a session of its own, so its group alone would leave it running)."""
        process = self.processes.pop(name, None)
        if process is not None:
            process.kill()

    def down(self) -> None:
        for name in reversed(SERVICES):
            self.stop(name)


def _pid_dir(run_dir: Path) -> Path:
    return run_dir / "pids"


def cmd_up(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    pid_dir = _pid_dir(run_dir)
    if pid_dir.exists() and any(pid_dir.iterdir()):
        print(f"the stack seems to be up already (PIDs in {pid_dir}); run `make down` first", file=sys.stderr)
        return 1
    if not (args.repository / "deepfake_detector" / "config.pbtxt").exists():
        print(
            f"no model in {args.repository} (deepfake_detector/config.pbtxt + 1/model.onnx); "
            "export one (make export) or pass --repository",
            file=sys.stderr,
        )
        return 1
    from gateway.settings import GatewaySettings  # the gateway's own reading of DEEPFAKE_API_KEYS

    gateway_settings = GatewaySettings()
    api_key = gateway_settings.api_keys
    key_file = run_dir / "api_key"
    if not api_key and not gateway_settings.auth_disabled:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(24))
        api_key = key_file.read_text().strip()
    ports = Ports(
        args.triton_port, args.triton_port + 1, args.triton_port + 2, args.preprocessor_port, args.port
    )
    stack = LocalStack(run_dir, args.repository, ports, api_key)
    pid_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in SERVICES:
            stack.start(name)
            (pid_dir / f"{name}.pid").write_text(str(stack.processes[name].pid))
            stack.wait_ready(name, args.timeout)
            print(f"{name:<13} ready  {stack.urls[name]}   log {stack.log_path(name)}", flush=True)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        stack.down()
        for path in pid_dir.glob("*.pid"):
            path.unlink()
        return 1
    print(f"\nAPI docs  {stack.urls['gateway']}/docs      web page {stack.urls['gateway']}/")
    ws_url = stack.urls["gateway"].replace("http://", "ws://")
    print(f"streams   {ws_url}/v1/streams   (WebSocket; messages described at /v1/streams/asyncapi.json)")
    if api_key:
        source = f"; from {key_file}" if key_file.exists() else ""
        print(f"API key   {api_key.split(',')[0]}   (header X-API-Key{source})")
    print(f"metrics   {stack.urls['gateway']}/metrics  {stack.urls['preprocessor']}/metrics  "
          f"http://127.0.0.1:{ports.triton_metrics}/metrics")  # fmt: skip
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    pid_dir = _pid_dir(args.run_dir)
    stopped = 0
    for name in reversed(SERVICES):
        path = pid_dir / f"{name}.pid"
        if path.exists():
            stop_pid(int(path.read_text()))
            path.unlink()
            stopped += 1
            print(f"stopped {name}")
    if not stopped:
        print("nothing to stop")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the service stack as local processes.")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / ".run" / "stack")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--port", type=int, default=8080, help="gateway port")
    parser.add_argument("--preprocessor-port", type=int, default=8081)
    parser.add_argument(
        "--triton-port", type=int, default=8000, help="Triton HTTP port (+1 gRPC, +2 metrics)"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each service")
    args = parser.parse_args(argv)
    return cmd_up(args) if args.action == "up" else cmd_down(args)


if __name__ == "__main__":
    sys.exit(main())
