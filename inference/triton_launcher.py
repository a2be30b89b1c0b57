"""Start the `tritonserver` that nvidia-pytriton bundles, on a CPU, from the project's model repository.

WHY: model_repository/ is written for the NGC Triton image (platform onnxruntime_onnx). The bundled
binary has only the Python backend, so at launch time we generate a variant of the repository in a
run directory: the same config (inputs, outputs, batching, parameters) with `backend: "python"`,
the same model.onnx (linked, not copied) and `model.py` from `inference/triton_python_model.py`.
The environment it needs was measured (ARCHITECTURE.md, Facts): a backend dir with the Python backend library,
its utils and the 3.11 stub; LD_LIBRARY_PATH with the interpreter's LIBDIR and nvidia_pytriton.libs;
the venv's bin first on PATH.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepfake.contracts.metadata import (
    AV_INPUT_MEL,
    AV_INPUT_MOUTH,
    AV_METADATA_KEY,
    AV_OUTPUT,
    METADATA_KEY,
    SyncMeta,
)
from deepfake.processes import ManagedProcess, http_ready
from deepfake.settings import REPO_ROOT
from inference.onnx_backend import onnx_session
from inference.sync_backend import SYNC_MODEL_NAME, read_sync_meta

# Every model of the repository carries its metadata under one of these config parameters: the visual
# model under ``deepfake`` (ModelMeta), the audio-visual sync model under ``deepfake_av_meta`` (SyncMeta).
METADATA_KEYS = (METADATA_KEY, AV_METADATA_KEY)

MODEL_TEMPLATE = Path(__file__).with_name("triton_python_model.py")
SHA256_PARAMETER = "model_sha256"


class TritonLaunchError(RuntimeError):
    """Triton could not be prepared or did not become ready; the message says why."""


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _pytriton_dir() -> Path:
    root = _site_packages() / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise TritonLaunchError(
            f"tritonserver not found under {root}; install the serve extra: pip install -e '.[serve]'"
        )
    return root


def tritonserver_binary() -> Path:
    return _pytriton_dir() / "bin" / "tritonserver"


def prepare_backend_dir(dest: Path) -> Path:
    """Assemble `<dest>/python/` as the bare binary expects it; returns `dest` (the --backend-directory)."""
    root = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonLaunchError(f"no Triton Python-backend stub for Python {version} at {stub}")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        # Via a new file and a rename: a stub still running from a killed server keeps the old file
        # (copying over an executable in use fails with "Text file busy").
        target = python_dir / source.name
        partial = target.with_name(target.name + ".partial")
        shutil.copy2(source, partial)
        os.replace(partial, target)
    return dest


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The measured environment: interpreter LIBDIR first (else Debian's libpython is loaded)."""
    env = dict(os.environ if base is None else base)
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(_site_packages() / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_model_config(path: Path) -> model_config_pb2.ModelConfig:
    """A config.pbtxt parsed with Triton's own schema (errors name the file and the field)."""
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise TritonLaunchError(f"cannot read Triton model config {path}: {exc}") from exc


def model_config_text(config: model_config_pb2.ModelConfig) -> str:
    """The one config.pbtxt writer: Triton's protobuf text format (export, the launcher, GPU variants, the
    sync model's config from sync_config below)."""
    return text_format.MessageToString(config)


def sync_config(meta: SyncMeta, max_batch_size: int = 16) -> model_config_pb2.ModelConfig:
    """The sync model's Triton config (platform onnxruntime_onnx on the NGC image, dynamic batching, the
    metadata parameter), written by model_config_text. With max_batch_size > 0 Triton's dims leave out the
    batch axis: mouth [T, 48, 96] (T = clip_len, fixed in the exported graph), mel [K, 80, 64] (K: the
    candidate offsets, dynamic), sync_logits [K]."""
    pb = model_config_pb2
    config = pb.ModelConfig(name=SYNC_MODEL_NAME, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    config.input.add(name=AV_INPUT_MOUTH, data_type=pb.TYPE_UINT8, dims=[meta.clip_len, *meta.mouth])
    config.input.add(name=AV_INPUT_MEL, data_type=pb.TYPE_FP32, dims=[-1, meta.n_mels, meta.mel_frames])
    config.output.add(name=AV_OUTPUT, data_type=pb.TYPE_FP32, dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    config.parameters[AV_METADATA_KEY].string_value = meta.to_json()
    return config


def write_sync_config(model_dir: Path, max_batch_size: int = 16) -> Path:
    """``<model_dir>/config.pbtxt`` for ``<model_dir>/1/model.onnx``, its metadata read from the file."""
    model_path = model_dir / "1" / "model.onnx"
    meta = read_sync_meta(onnx_session(model_path, threads=1), model_path)
    target = model_dir / "config.pbtxt"
    target.write_text(model_config_text(sync_config(meta, max_batch_size)))
    return target


def generate_cpu_repository(
    source: Path, dest: Path, intra_op_threads: int = 1, instances: int = 1
) -> list[str]:
    """Write the Python-backend variant of every ONNX model in `source` to `dest`; returns model names."""
    if not source.is_dir():
        raise TritonLaunchError(f"model repository {source} does not exist")
    if dest.exists():
        shutil.rmtree(dest)
    names = []
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").exists()):
        config = read_model_config(model_dir / "config.pbtxt")
        versions = sorted(p for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").exists())
        if not versions:
            continue
        if not any(key in config.parameters for key in METADATA_KEYS):
            raise TritonLaunchError(
                f"{model_dir / 'config.pbtxt'} has no parameters key {' or '.join(map(repr, METADATA_KEYS))} "
                "(the model metadata)"
            )
        config.name = config.name or model_dir.name
        config.ClearField("platform")
        config.backend = "python"
        del config.instance_group[:]
        group = config.instance_group.add()
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        group.count = instances
        config.parameters["intra_op_threads"].string_value = str(intra_op_threads)
        # The checksum of the newest version travels with the config so clients can report it.
        config.parameters[SHA256_PARAMETER].string_value = file_sha256(versions[-1] / "model.onnx")
        out_dir = dest / model_dir.name
        for version in versions:
            (out_dir / version.name).mkdir(parents=True)
            (out_dir / version.name / "model.onnx").symlink_to((version / "model.onnx").resolve())
            shutil.copy2(MODEL_TEMPLATE, out_dir / version.name / "model.py")
        (out_dir / "config.pbtxt").write_text(model_config_text(config))
        names.append(config.name)
    if not names:
        raise TritonLaunchError(f"no model with config.pbtxt and <version>/model.onnx found in {source}")
    return names


@dataclass
class TritonServer:
    """A real `tritonserver` process serving the CPU variant of a model repository."""

    repository: Path
    run_dir: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    intra_op_threads: int = 1
    instances: int = 1
    log_path: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        backends = prepare_backend_dir(self.run_dir / "backends")
        repo = self.run_dir / "repository"
        generate_cpu_repository(self.repository, repo, self.intra_op_threads, self.instances)
        return [
            str(tritonserver_binary()),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
        ]

    def start(self) -> None:
        self.log_path = self.log_path or self.run_dir / "tritonserver.log"
        ready = http_ready(f"{self.http_url}/v2/health/ready", timeout_s=2.0)
        command, env = self.command(), triton_environment()
        self.process = ManagedProcess(
            "tritonserver", command, self.log_path, ready, env, not_ready=TritonLaunchError
        )
        self.process.start()

    def is_ready(self) -> bool:
        return self.process is not None and self.process.ready()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        assert self.process is not None, "start() first"
        self.process.wait_ready(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            self.process.stop(timeout_s)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m inference.triton_launcher sync-config [MODEL_DIR]``: (re)write the sync model's
    config.pbtxt from its ONNX file's metadata (launching Triton is ``deepfake serve triton``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["sync-config"])
    parser.add_argument(
        "model_dir", nargs="?", type=Path, default=REPO_ROOT / "model_repository" / SYNC_MODEL_NAME
    )
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    print(write_sync_config(args.model_dir, args.max_batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
