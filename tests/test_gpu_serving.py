"""scripts/gpu_serving.py (`make trt`, `make bench-gpu`) on a machine without a GPU.

What can be checked here is checked for real: the refusal without a GPU, the TensorRT-plan config
(parsed with Triton's own protobuf schema), the trtexec profile, the per-variant repository copies, and
the load generator driving a real tritonserver (the CPU Python-backend variant, random-weight model).
The GPU figures themselves only come from running `make bench-gpu` on a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from deepfake.settings import REPO_ROOT
from tests.random_model import default_test_meta, write_random_model

SCRIPT = REPO_ROOT / "scripts" / "gpu_serving.py"
_spec = importlib.util.spec_from_file_location("gpu_serving", SCRIPT)
assert _spec and _spec.loader
gpu_serving = importlib.util.module_from_spec(_spec)
sys.modules["gpu_serving"] = gpu_serving
_spec.loader.exec_module(gpu_serving)


def onnx_config(clip_len: int = 8, size: int = 64, max_batch: int = 16) -> mc.ModelConfig:
    """A config.pbtxt of the shape model_repository/ uses on GPUs (ONNX Runtime + TensorRT accelerator)."""
    config = mc.ModelConfig(name="deepfake_detector", platform="onnxruntime_onnx", max_batch_size=max_batch)
    clips = config.input.add(name="clips", data_type=mc.TYPE_UINT8)
    clips.dims.extend([-1, size, size, 3])
    config.output.add(name="clip_logit", data_type=mc.TYPE_FP32).dims.extend([1])
    config.output.add(name="frame_logits", data_type=mc.TYPE_FP32).dims.extend([-1])
    config.dynamic_batching.max_queue_delay_microseconds = 100
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    accelerator.parameters["precision_mode"] = "FP16"
    config.parameters["deepfake"].string_value = default_test_meta(
        crop_size=size, clip_len=clip_len
    ).to_json()
    return config


def write_repository(root: Path, config: mc.ModelConfig) -> Path:
    model_dir = root / "deepfake_detector"
    (model_dir / "1").mkdir(parents=True)
    write_random_model(model_dir / "1" / "model.onnx", default_test_meta())
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root


@pytest.mark.skipif(bool(gpu_serving.gpu_names()), reason="this machine has a GPU: the refusal path is moot")
@pytest.mark.parametrize("command", [["trt"], ["bench"]])
def test_refuses_clearly_without_a_gpu(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == gpu_serving.EXIT_NO_GPU
    assert "no NVIDIA GPU found" in result.stderr and "Nothing was run" in result.stderr


def test_allow_cpu_needs_an_external_server() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "bench", "--allow-cpu"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--allow-cpu needs --url" in result.stderr


def test_plan_config_keeps_the_contract_and_sets_serving(tmp_path: Path) -> None:
    source = onnx_config()
    plan = gpu_serving.plan_config(source, max_batch=32, instances=2, queue_delay_us=250)
    parsed = text_format.Parse(gpu_serving.config_text(plan), mc.ModelConfig())  # round-trips Triton's schema
    assert parsed.platform == "tensorrt_plan" and not parsed.backend
    assert parsed.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in parsed.input] == [
        ("clips", mc.TYPE_UINT8, [-1, 64, 64, 3])
    ]
    assert [o.name for o in parsed.output] == ["clip_logit", "frame_logits"]
    assert parsed.parameters["deepfake"].string_value == source.parameters["deepfake"].string_value
    assert not parsed.HasField("optimization")  # the ORT TensorRT accelerator does not apply to a plan
    assert [(g.kind, g.count) for g in parsed.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]


def test_clip_shape_takes_a_dynamic_length_from_the_metadata() -> None:
    assert gpu_serving.clip_shape(onnx_config(clip_len=12, size=96)) == (12, 96, 96, 3)
    bad = onnx_config()
    bad.input[0].dims[1] = -1
    with pytest.raises(gpu_serving.ServingError, match="crop size must be fixed"):
        gpu_serving.clip_shape(bad)


def test_trtexec_profile_spans_batch_one_to_max() -> None:
    flags = gpu_serving.trtexec_command(Path("m.onnx"), Path("m.plan"), (8, 160, 160, 3), 64)
    assert "--fp16" in flags
    assert "--minShapes=clips:1x8x160x160x3" in flags
    assert "--optShapes=clips:32x8x160x160x3" in flags
    assert "--maxShapes=clips:64x8x160x160x3" in flags


def test_variant_repository_links_models_and_rewrites_the_config(tmp_path: Path) -> None:
    source = write_repository(tmp_path / "src", onnx_config())
    dest = gpu_serving.variant_repository(source, tmp_path / "variant", instances=3, queue_delay_us=700)
    model = dest / "deepfake_detector" / "1" / "model.onnx"
    assert model.is_file() and not model.is_symlink()
    assert model.read_bytes() == (source / "deepfake_detector" / "1" / "model.onnx").read_bytes()
    config = gpu_serving.read_config(dest / "deepfake_detector" / "config.pbtxt")
    assert config.instance_group[0].count == 3 and config.dynamic_batching.max_queue_delay_microseconds == 700
    assert config.platform == "onnxruntime_onnx" and config.optimization.execution_accelerators


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_load_generator_drives_a_real_triton(tmp_path: Path) -> None:
    """The bench's client side against the local CPU tritonserver (Python backend, random model)."""
    from inference.triton_launcher import TritonLaunchError, TritonServer

    repo = write_repository(tmp_path / "repo", onnx_config())
    server = TritonServer(
        repo, tmp_path / "run", http_port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port()
    )
    try:
        server.__enter__()
    except TritonLaunchError as exc:
        pytest.fail(f"local tritonserver did not start: {exc}")
    try:
        shape, max_batch = gpu_serving.model_shape_and_max_batch(server.grpc_url)
        assert shape == (8, 64, 64, 3) and max_batch == 16
        result = gpu_serving.drive(
            server.grpc_url, batch=4, shape=shape, concurrency=2, seconds=1.0, warmup=1
        )
        assert result["errors"] == 0 and result["requests"] > 0
        assert result["crops_per_s"] == pytest.approx(result["clips_per_s"] * 8)
        assert result["clips_per_s"] == pytest.approx(result["requests"] * 4 / result["seconds"])
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["server_compute_ms"] > 0 and result["executed_batch"] >= 4
    finally:
        server.__exit__(None, None, None)
    assert os.path.exists(server.log_path)


SHIPPED_CONFIG = REPO_ROOT / "model_repository" / "deepfake_detector" / "config.pbtxt"


@pytest.mark.skipif(not SHIPPED_CONFIG.is_file(), reason=f"{SHIPPED_CONFIG} not exported yet (make export)")
def test_shipped_config_serves_on_gpus_and_converts_to_a_plan() -> None:
    """The config the GPU deployment serves: ONNX Runtime, dynamic batching, metadata, a fixed crop size."""
    config = gpu_serving.read_config(SHIPPED_CONFIG)
    assert config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"
    assert config.max_batch_size >= 1 and config.HasField("dynamic_batching")
    assert "deepfake" in config.parameters
    t, h, w, c = gpu_serving.clip_shape(config)
    assert t >= 1 and h == w and c == 3
    plan = gpu_serving.plan_config(config, max_batch=config.max_batch_size)
    assert plan.platform == "tensorrt_plan" and plan.parameters["deepfake"] == config.parameters["deepfake"]
