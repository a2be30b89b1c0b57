"""``deepfake serve triton|preprocessor|gateway``: run one service of the stack in the foreground.

WHY one command: `make up`, the Dockerfiles-free local stack and the integration tests start the services
the same way. `triton` prepares the CPU Python-backend variant of the model repository and the
environment the bundled `tritonserver` needs (inference/triton_launcher.py); the two FastAPI services
run under uvicorn with their factories and read their settings from DEEPFAKE_* variables.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from deepfake.settings import REPO_ROOT

HELP = "Run a service: triton (CPU tritonserver), preprocessor (:8081) or gateway (:8080)."
APPS = {"preprocessor": ("preprocessor.app:create_app", 8081), "gateway": ("gateway.app:create_app", 8080)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=["triton", "preprocessor", "gateway"], help="which service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="HTTP port (default: 8000 triton, 8081 preprocessor, 8080 gateway)"
    )
    triton = parser.add_argument_group("triton")
    triton.add_argument(
        "--repository",
        type=Path,
        default=REPO_ROOT / "model_repository",
        help="model repository (ONNX models)",
    )
    triton.add_argument(
        "--run-dir",
        type=Path,
        default=REPO_ROOT / ".run" / "triton",
        help="where the generated repository goes",
    )
    triton.add_argument("--grpc-port", type=int, default=8001)
    triton.add_argument("--metrics-port", type=int, default=8002)
    triton.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model instance")
    triton.add_argument("--instances", type=int, default=1, help="model instances (parallel executions)")
    triton.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for readiness")


def run_triton(args: argparse.Namespace) -> int:
    from inference.triton_launcher import TritonLaunchError, TritonServer

    server = TritonServer(
        repository=args.repository,
        run_dir=args.run_dir,
        host=args.host,
        http_port=args.port or 8000,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        intra_op_threads=args.threads,
        instances=args.instances,
    )

    class Stop(Exception):
        pass

    def on_signal(signum: int, _: FrameType | None) -> None:
        # Raise into the main thread instead of stopping here: the main thread sits in Popen.wait(),
        # which holds the lock a second wait() inside a handler would need (it would deadlock).
        raise Stop(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
        server.wait_ready(args.ready_timeout)
        print(
            f"triton ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  "
            f"log {server.log_path}",
            flush=True,
        )
        assert server.process is not None
        return server.process.wait()
    except TritonLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stop as stop:
        return 128 + int(stop.args[0])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean stop finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()


def run(args: argparse.Namespace) -> int:
    if args.service == "triton":
        return run_triton(args)
    import uvicorn

    factory, default_port = APPS[args.service]
    uvicorn.run(factory, factory=True, host=args.host, port=args.port or default_port, log_level="info")
    return 0
