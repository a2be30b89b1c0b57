"""GPU serving: build the TensorRT engine (`make trt`) and benchmark Triton on a GPU (`make bench-gpu`).

WHY one script: the issue's target (>= 2,000 face crops/s at p99 < 50 ms on one H100) can only be
checked on a GPU, and whoever gets one should need a single command that builds, serves, drives and
reports, with nothing to assemble by hand. It has NOT been run on a GPU yet (deploy/README.md).

    python scripts/gpu_serving.py trt      # ONNX -> TensorRT FP16 plan + config: build/trt_repository/
    python scripts/gpu_serving.py bench    # start Triton per variant, sweep batch sizes: crops/s, p50/p99

Both refuse to run without an NVIDIA GPU (nvidia-smi listing one), with a message saying so. `bench --url
HOST:GRPC_PORT --allow-cpu` drives an already running Triton instead (any hardware): that is how the client
side is tested here on CPU.

Triton is started from the NGC image (docker run --gpus all nvcr.io/nvidia/tritonserver:24.10-py3) or from
a local `tritonserver` (--tritonserver PATH, e.g. inside that image). The TensorRT plan is built with
`trtexec` from PATH or from the matching NGC TensorRT image (24.10: TensorRT 10.5, the version Triton 24.10
links; a plan only loads in the TensorRT version that built it).

Variants benchmarked (--variants):
- onnx-trt: model_repository/ as shipped (platform onnxruntime_onnx; the TensorRT FP16 execution
  accelerator in its config.pbtxt builds engines inside ONNX Runtime on first load);
- plan: build/trt_repository/ (platform tensorrt_plan, made by `trt`).
For each variant and instance count (--instances), the config is copied with that instance_group count and
the dynamic-batching queue delay (--queue-delay-us), so instance groups and batching are chosen by
measurement: the printed table (and the JSON in runs/bench_gpu/) is the evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
from deepfake.processes import ManagedProcess, http_ready
from deepfake.settings import REPO_ROOT

MODEL_NAME = "deepfake_detector"
SOURCE_REPOSITORY = REPO_ROOT / "model_repository"
TRT_REPOSITORY = REPO_ROOT / "build" / "trt_repository"
BENCH_DIR = REPO_ROOT / "build" / "bench_gpu"
RESULTS_DIR = REPO_ROOT / "runs" / "bench_gpu"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"
INPUT_NAME = "clips"
TARGET_CROPS_PER_S = 2000.0
TARGET_P99_MS = 50.0
EXIT_NO_GPU = 3


class ServingError(RuntimeError):
    """A step of the build or the benchmark failed; the message says which and why."""


# --- GPU presence -------------------------------------------------------------------------------------


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs nvidia-smi lists; empty when there is no driver or no GPU."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def require_gpu(what: str) -> list[str]:
    gpus = gpu_names()
    if not gpus:
        print(
            f"{what}: no NVIDIA GPU found (nvidia-smi is missing or lists no GPU). This step needs a machine "
            "with an NVIDIA GPU, its driver and, for the NGC images, Docker with the NVIDIA Container "
            "Toolkit. Nothing was run; no GPU figures exist until it runs on one (deploy/README.md).",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_NO_GPU)
    return gpus


# --- Model configs ------------------------------------------------------------------------------------


def read_config(path: Path):
    """The launcher's config.pbtxt reader, its error as this script's."""
    from inference.triton_launcher import TritonLaunchError, read_model_config

    try:
        return read_model_config(path)
    except TritonLaunchError as exc:
        raise ServingError(str(exc)) from exc


def config_text(config) -> str:
    from inference.triton_launcher import model_config_text

    return model_config_text(config)


def plan_config(onnx_config, max_batch: int, instances: int = 1, queue_delay_us: int = 500):
    """The tensorrt_plan config for an engine built from the model `onnx_config` describes.

    Inputs, outputs, dims, the model metadata parameter and the batching policy carry over, so the
    preprocessor talks to the plan exactly as to the ONNX model (same name, same tensors, same metadata).
    """
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    config.CopyFrom(onnx_config)
    config.name = onnx_config.name or MODEL_NAME
    config.ClearField("backend")
    config.platform = "tensorrt_plan"
    config.ClearField("optimization")  # ORT execution accelerators do not apply to a plan
    config.max_batch_size = max_batch
    set_serving(config, instances, queue_delay_us)
    return config


def set_serving(config, instances: int, queue_delay_us: int) -> None:
    """Instance group (GPU, `instances` copies) and dynamic batching preferring the largest batches."""
    from tritonclient.grpc import model_config_pb2

    if instances < 1:
        raise ServingError(f"instances must be >= 1, got {instances}")
    del config.instance_group[:]
    group = config.instance_group.add()
    group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    group.count = instances
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    sizes = [b for b in (4, 8, 16, 32, 64) if b <= config.max_batch_size] or [config.max_batch_size]
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.preferred_batch_size.extend(sizes)


def clip_shape(config) -> tuple[int, int, int, int]:
    """(T, H, W, C) of the `clips` input; a dynamic T (-1) is taken from the model metadata's clip_len."""
    inputs = [i for i in config.input if i.name == INPUT_NAME]
    if not inputs:
        raise ServingError(f"model config has no input {INPUT_NAME!r}")
    dims = list(inputs[0].dims)
    if len(dims) != 4:
        raise ServingError(f"input {INPUT_NAME!r} dims {dims}: expected [T, H, W, 3] (batch excluded)")
    if dims[0] < 1:
        meta = json.loads(config.parameters["deepfake"].string_value or "{}")
        dims[0] = int(meta.get("clip_len", 8))
    if min(dims[1:]) < 1:
        raise ServingError(
            f"input {INPUT_NAME!r} has dynamic spatial dims {dims}; the crop size must be fixed"
        )
    return dims[0], dims[1], dims[2], dims[3]


# --- make trt -----------------------------------------------------------------------------------------


def trtexec_command(
    onnx_path: Path, plan_path: Path, shape: tuple[int, int, int, int], max_batch: int
) -> list[str]:
    """trtexec arguments: FP16, one optimisation profile from batch 1 to max_batch at the clip length."""
    t, h, w, c = shape
    dims = f"{t}x{h}x{w}x{c}"
    return [
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        "--fp16",
        f"--minShapes={INPUT_NAME}:1x{dims}",
        f"--optShapes={INPUT_NAME}:{max(1, max_batch // 2)}x{dims}",
        f"--maxShapes={INPUT_NAME}:{max_batch}x{dims}",
        "--skipInference",
    ]


def build_trt(args: argparse.Namespace) -> int:
    require_gpu("make trt")
    source_dir = args.repository / MODEL_NAME
    config = read_config(source_dir / "config.pbtxt")
    versions = sorted((p for p in source_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    onnx_files = [v / "model.onnx" for v in versions if (v / "model.onnx").is_file()]
    if not onnx_files:
        raise ServingError(
            f"no <version>/model.onnx under {source_dir}: export the model first (make export)"
        )
    onnx_path = onnx_files[-1]
    max_batch = args.max_batch or config.max_batch_size
    shape = clip_shape(config)
    out_model = args.out / MODEL_NAME
    version_dir = out_model / onnx_path.parent.name
    if out_model.exists():
        shutil.rmtree(out_model)
    version_dir.mkdir(parents=True)
    flags = trtexec_command(Path("/in/model.onnx"), Path("/out/model.plan"), shape, max_batch)
    local = shutil.which("trtexec")
    if local:
        flags = trtexec_command(onnx_path, version_dir / "model.plan", shape, max_batch)
        command = [local, *flags]
    else:
        require_docker()
        command = [
            "docker", "run", "--rm", "--gpus", "all",
            "-v", f"{onnx_path.parent.resolve()}:/in:ro", "-v", f"{version_dir.resolve()}:/out",
            "--user", f"{os.getuid()}:{os.getgid()}",
            args.tensorrt_image, "bash", "-c",
            'exec "$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)" "$@"', "trtexec", *flags,
        ]  # fmt: skip
    print("building TensorRT engine:", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command)
    if result.returncode != 0 or not (version_dir / "model.plan").is_file():
        raise ServingError(f"trtexec failed (exit {result.returncode}); its output is above")
    (out_model / "config.pbtxt").write_text(config_text(plan_config(config, max_batch)))
    print(f"engine built in {time.perf_counter() - start:.0f} s: {version_dir / 'model.plan'}")
    print(f"repository for Triton: {args.out} (platform tensorrt_plan, max_batch_size {max_batch})")
    return 0


# --- Triton lifecycle ---------------------------------------------------------------------------------


def require_docker() -> None:
    if shutil.which("docker") is None:
        raise ServingError(
            "docker not found: install Docker + NVIDIA Container Toolkit, or pass --tritonserver"
        )
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise ServingError("docker is installed but its daemon is not reachable (docker info failed)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Triton:
    """One Triton server for one repository variant: an NGC container or a local binary."""

    def __init__(self, repository: Path, image: str, binary: str | None, log_path: Path) -> None:
        self.repository = repository.resolve()
        self.image, self.binary, self.log_path = image, binary, log_path
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.container = f"deepfake-bench-{os.getpid()}-{self.http}"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        flags = ["--strict-readiness=true", "--log-verbose=0"]
        if self.binary:
            command = [
                self.binary, f"--model-repository={self.repository}", f"--http-port={self.http}",
                f"--grpc-port={self.grpc}", f"--metrics-port={self.metrics}", *flags,
            ]  # fmt: skip
        else:
            require_docker()
            command = [
                "docker", "run", "--rm", "--name", self.container, "--gpus", "all", "--shm-size=2g",
                "--ulimit", "memlock=-1", "-p", f"127.0.0.1:{self.http}:8000",
                "-p", f"127.0.0.1:{self.grpc}:8001", "-p", f"127.0.0.1:{self.metrics}:8002",
                "-v", f"{self.repository}:/models:ro", self.image,
                "tritonserver", "--model-repository=/models", *flags,
            ]  # fmt: skip
        self.log_path.unlink(missing_ok=True)  # one run per log
        ready = http_ready(f"http://127.0.0.1:{self.http}/v2/models/{MODEL_NAME}/ready")
        self.process = ManagedProcess(
            "Triton", command, self.log_path, ready, poll_s=1.0, not_ready=ServingError
        )
        self.process.start()

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None, "start() first"
        self.process.wait_ready(timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if not self.binary:  # the container's own stop first: killing the docker client leaves it running
            subprocess.run(["docker", "stop", "-t", "30", self.container], capture_output=True)
        self.process.stop(timeout_s=60)


def variant_repository(source: Path, dest: Path, instances: int, queue_delay_us: int) -> Path:
    """A copy of `source`'s deepfake_detector with the instance count and batching under test.

    Model files are hard-linked when possible (no copy of a large engine) and copied otherwise; symlinks
    would dangle inside a container that mounts only `dest`.
    """
    model_src = source / MODEL_NAME
    config = read_config(model_src / "config.pbtxt")
    set_serving(config, instances, queue_delay_us)
    model_dest = dest / MODEL_NAME
    if dest.exists():
        shutil.rmtree(dest)
    for path in model_src.rglob("*"):
        if path.is_file() and path.name != "config.pbtxt":
            target = model_dest / path.relative_to(model_src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    model_dest.mkdir(parents=True, exist_ok=True)
    (model_dest / "config.pbtxt").write_text(config_text(config))
    return dest


# --- Load generation ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured point: a variant, an instance count, a batch size, a concurrency."""

    variant: str
    instances: int
    batch: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    clips_per_s: float
    crops_per_s: float
    p50_ms: float
    p99_ms: float
    server_queue_ms: float
    server_compute_ms: float
    executed_batch: float

    @property
    def meets_target(self) -> bool:
        return self.crops_per_s >= TARGET_CROPS_PER_S and self.p99_ms < TARGET_P99_MS


def _model_stats(client) -> tuple[int, int, int, int, int]:
    """(success count, queue ns, compute-infer ns, inference count, execution count) of the model."""
    stats = client.get_inference_statistics(model_name=MODEL_NAME).model_stats
    s = stats[0]
    i = s.inference_stats
    return i.success.count, i.queue.ns, i.compute_infer.ns, s.inference_count, s.execution_count


def drive(
    url: str, batch: int, shape: tuple[int, ...], concurrency: int, seconds: float, warmup: int
) -> dict:
    """`concurrency` threads, each with its own gRPC client, sending [batch, T, H, W, 3] uint8 back to back.

    Latency is the client-side round trip of one request; crops/s counts batch * T crops per success.
    """
    import tritonclient.grpc as grpcclient

    data = np.random.default_rng(batch).integers(0, 256, size=(batch, *shape), dtype=np.uint8)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop = threading.Event()
    first_error: list[str] = []

    def worker(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        infer_input = grpcclient.InferInput(INPUT_NAME, list(data.shape), "UINT8")
        infer_input.set_data_from_numpy(data)
        for _ in range(warmup):
            client.infer(MODEL_NAME, [infer_input])
        barrier.wait()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                client.infer(MODEL_NAME, [infer_input], client_timeout=30)
            except Exception as exc:
                errors[index] += 1
                if not first_error:
                    first_error.append(str(exc))
                continue
            latencies[index].append(time.perf_counter() - start)
        client.close()

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    control = grpcclient.InferenceServerClient(url)
    barrier.wait()
    before = _model_stats(control)
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.perf_counter() - start
    after = _model_stats(control)
    control.close()
    all_latencies = np.array([x for per in latencies for x in per]) * 1000.0
    if all_latencies.size == 0:
        raise ServingError(f"no successful request at batch {batch}: {first_error[:1]}")
    delta = [a - b for a, b in zip(after, before, strict=True)]
    successes = max(delta[0], 1)
    return {
        "requests": int(all_latencies.size),
        "errors": int(sum(errors)),
        "seconds": elapsed,
        "clips_per_s": all_latencies.size * batch / elapsed,
        "crops_per_s": all_latencies.size * batch * shape[0] / elapsed,
        "p50_ms": float(np.percentile(all_latencies, 50)),
        "p99_ms": float(np.percentile(all_latencies, 99)),
        "server_queue_ms": delta[1] / successes / 1e6,
        "server_compute_ms": delta[2] / successes / 1e6,
        "executed_batch": delta[3] / max(delta[4], 1),
    }


def model_shape_and_max_batch(url: str) -> tuple[tuple[int, int, int, int], int]:
    """The served model's clip shape and max batch, read from Triton (what is served, not what is on disk)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(MODEL_NAME).config
    finally:
        client.close()
    return clip_shape(config), config.max_batch_size


def sweep(url: str, variant: str, instances: int, args: argparse.Namespace) -> list[Row]:
    shape, max_batch = model_shape_and_max_batch(url)
    rows = []
    for batch in args.batch_sizes:
        if max_batch and batch > max_batch:
            print(f"  skip batch {batch}: the model's max_batch_size is {max_batch}")
            continue
        result = drive(url, batch, shape, args.concurrency, args.seconds, args.warmup)
        row = Row(variant=variant, instances=instances, batch=batch, concurrency=args.concurrency, **result)
        print_row(row)
        rows.append(row)
    return rows


HEADER = (
    f"{'variant':<10} {'inst':>4} {'batch':>5} {'conc':>4} {'req':>6} {'err':>4} {'clips/s':>9} "
    f"{'crops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'queue ms':>8} {'infer ms':>8} {'exec b':>6}  target"
)


def print_row(row: Row) -> None:
    print(
        f"{row.variant:<10} {row.instances:>4} {row.batch:>5} {row.concurrency:>4} {row.requests:>6} "
        f"{row.errors:>4} {row.clips_per_s:>9.1f} {row.crops_per_s:>9.1f} "
        f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.server_queue_ms:>8.2f} "
        f"{row.server_compute_ms:>8.2f} {row.executed_batch:>6.1f}  "
        f"{'MET' if row.meets_target else 'not met'}",
        flush=True,
    )


def bench(args: argparse.Namespace) -> int:
    gpus = gpu_names()
    if not (args.url and args.allow_cpu):
        gpus = require_gpu("make bench-gpu")
    print(f"GPU: {'; '.join(gpus) or 'none (--allow-cpu)'}")
    if not gpus:
        print("CPU run: this tests the client side only; the target below is for a GPU, not this machine")
    print(
        f"target: >= {TARGET_CROPS_PER_S:.0f} crops/s at p99 < {TARGET_P99_MS:.0f} ms\n{HEADER}", flush=True
    )
    rows: list[Row] = []
    if args.url:
        rows += sweep(args.url, "external", 0, args)
    else:
        sources = {"onnx-trt": args.repository, "plan": args.trt_repository}
        for variant in args.variants:
            source = sources[variant]
            if not (source / MODEL_NAME / "config.pbtxt").is_file():
                hint = "run `make trt` first" if variant == "plan" else "export the model first (make export)"
                raise ServingError(f"variant {variant}: no {source / MODEL_NAME / 'config.pbtxt'}; {hint}")
            for instances in args.instances:
                repo = variant_repository(
                    source, BENCH_DIR / f"{variant}-{instances}", instances, args.queue_delay_us
                )
                server = Triton(
                    repo, args.triton_image, args.tritonserver, BENCH_DIR / f"{variant}-{instances}.log"
                )
                server.start()
                try:
                    server.wait_ready(args.ready_timeout)
                    rows += sweep(server.grpc_url, variant, instances, args)
                finally:
                    server.stop()
    best = max((r for r in rows if r.p99_ms < TARGET_P99_MS), key=lambda r: r.crops_per_s, default=None)
    if best:
        print(
            f"\nbest under p99 {TARGET_P99_MS:.0f} ms: {best.crops_per_s:.0f} crops/s "
            f"({best.variant}, {best.instances} instance(s), batch {best.batch}, p99 {best.p99_ms:.1f} ms)"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    record = {
        "gpus": gpus,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"results: {out}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    trt = sub.add_parser("trt", help="build the TensorRT FP16 engine and its Triton config")
    trt.add_argument("--repository", type=Path, default=SOURCE_REPOSITORY)
    trt.add_argument("--out", type=Path, default=TRT_REPOSITORY)
    trt.add_argument(
        "--max-batch", type=int, default=0, help="engine's largest batch (default: the config's)"
    )
    trt.add_argument("--tensorrt-image", default=TENSORRT_IMAGE)
    b = sub.add_parser("bench", help="start Triton and measure crops/s and latency per batch size")
    b.add_argument("--variants", type=lambda s: s.split(","), default=["onnx-trt", "plan"])
    b.add_argument("--instances", type=_int_list, default=[1, 2], help="instance counts to compare")
    b.add_argument("--batch-sizes", type=_int_list, default=[1, 4, 8, 16, 32])
    b.add_argument("--concurrency", type=int, default=8, help="client threads sending at once")
    b.add_argument("--seconds", type=float, default=20.0, help="measured seconds per batch size")
    b.add_argument("--warmup", type=int, default=5, help="unmeasured requests per client first")
    b.add_argument("--queue-delay-us", type=int, default=500, help="dynamic batching max queue delay")
    b.add_argument("--ready-timeout", type=float, default=1200.0, help="seconds to wait for the model")
    b.add_argument("--repository", type=Path, default=SOURCE_REPOSITORY)
    b.add_argument("--trt-repository", type=Path, default=TRT_REPOSITORY)
    b.add_argument("--triton-image", default=TRITON_IMAGE)
    b.add_argument("--tritonserver", help="a local tritonserver binary instead of the NGC image")
    b.add_argument("--url", help="bench an already running Triton (gRPC host:port) instead of starting one")
    b.add_argument("--allow-cpu", action="store_true", help="with --url: run without a GPU (client test)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        unknown = set(args.variants) - {"onnx-trt", "plan"}
        if unknown:
            parser.error(f"unknown variant(s) {sorted(unknown)}; choose from onnx-trt, plan")
        if args.allow_cpu and not args.url:
            parser.error("--allow-cpu needs --url (a server this script does not start)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return build_trt(args) if args.command == "trt" else bench(args)
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
