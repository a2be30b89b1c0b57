"""The CPU repository variant and the launcher's refusals (no tritonserver started here; see integration)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepfake.contracts.metadata import METADATA_KEY, ModelMeta
from inference.onnx_backend import file_sha256
from inference.triton_launcher import (
    MODEL_TEMPLATE,
    TritonLaunchError,
    generate_cpu_repository,
    prepare_backend_dir,
    triton_environment,
)
from tests.integration.conftest import REPO_ROOT, write_test_repository
from tests.random_model import default_test_meta


def test_cpu_variant_keeps_the_config_but_runs_the_python_backend(tmp_path):
    meta = default_test_meta()
    model = write_test_repository(tmp_path / "repo", meta, max_batch_size=4)
    names = generate_cpu_repository(tmp_path / "repo", tmp_path / "cpu", intra_op_threads=2, instances=3)
    assert names == ["deepfake_detector"]
    out = tmp_path / "cpu" / "deepfake_detector"
    config = text_format.Parse((out / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == 4 and config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [o.name for o in config.output] == ["clip_logit", "frame_logits", "blend_map"]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 3
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert config.parameters["model_sha256"].string_value == file_sha256(model)
    assert ModelMeta.from_json(config.parameters[METADATA_KEY].string_value) == meta
    assert (out / "1" / "model.onnx").resolve() == model.resolve()  # linked, not copied
    assert (out / "1" / "model.py").read_text() == MODEL_TEMPLATE.read_text()


def test_repository_without_metadata_or_model_is_refused(tmp_path):
    with pytest.raises(TritonLaunchError, match="does not exist"):
        generate_cpu_repository(tmp_path / "missing", tmp_path / "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TritonLaunchError, match="no model"):
        generate_cpu_repository(tmp_path / "empty", tmp_path / "cpu")
    write_test_repository(tmp_path / "repo", default_test_meta())
    config = tmp_path / "repo" / "deepfake_detector" / "config.pbtxt"
    config.write_text(config.read_text().split("parameters")[0])
    with pytest.raises(TritonLaunchError, match="metadata"):
        generate_cpu_repository(tmp_path / "repo", tmp_path / "cpu")


def test_backend_dir_and_environment_follow_the_measured_recipe(tmp_path):
    backends = prepare_backend_dir(tmp_path / "backends")
    names = sorted(p.name for p in (backends / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    env = triton_environment({"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]


def test_serve_triton_without_a_model_exits_1_with_the_reason(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "triton", "--repository", str(tmp_path / "none"),
         "--run-dir", str(tmp_path / "run")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "does not exist" in completed.stderr
