"""The audio-visual sync model's in-process runtime, its Triton config and CPU variant, on the tiny random
sync model (tests/random_sync_model.py); the Triton runtime against a real tritonserver is in
tests/integration/test_stack.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepfake.contracts.metadata import AV_METADATA_KEY, SyncMeta
from inference.onnx_backend import ModelLoadError, file_sha256
from inference.sync_backend import OnnxSyncModel
from inference.triton_launcher import generate_cpu_repository, write_sync_config
from tests.random_sync_model import default_sync_meta, reference_sync_logits


def inputs(n: int, t: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mouth = rng.integers(0, 256, (n, t, 48, 96), dtype=np.uint8)
    return mouth, rng.standard_normal((n, k, 80, 64)).astype(np.float32)


def test_onnx_sync_model_reads_its_metadata_and_runs_any_n_t_k(random_sync_model_path):
    model = OnnxSyncModel(random_sync_model_path, threads=1)
    assert model.meta == default_sync_meta()
    assert model.info.sha256 == file_sha256(random_sync_model_path) and model.info.backend == "onnxruntime"
    t = model.meta.clip_len  # fixed in the exported graph; N and K are dynamic
    for n, k in [(1, 1), (4, 5), (2, 51)]:
        mouth, mel = inputs(n, t, k)
        got = model.sync_logits(mouth, mel)
        assert got.shape == (n, k) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference_sync_logits(mouth, mel), rtol=1e-5, atol=1e-5)


def test_onnx_sync_model_refuses_inputs_off_the_contract(random_sync_model_path):
    model = OnnxSyncModel(random_sync_model_path, threads=1)
    mouth, mel = inputs(2, model.meta.clip_len, 3)
    with pytest.raises(ValueError, match="mouth must be uint8"):
        model.sync_logits(mouth.astype(np.float32), mel)
    with pytest.raises(ValueError, match="mouth must be uint8"):
        model.sync_logits(mouth[:, :, :40], mel)
    with pytest.raises(ValueError, match="mel must be float32"):
        model.sync_logits(mouth, mel[:1])  # one mel per mouth window
    with pytest.raises(ValueError, match="mel must be float32"):
        model.sync_logits(mouth, mel.astype(np.float64))


def test_missing_or_undescribed_sync_model_is_refused_with_what_to_do(tmp_path, random_sync_model_path):
    with pytest.raises(ModelLoadError, match="--no-audio"):
        OnnxSyncModel(tmp_path / "missing.onnx")
    proto = onnx.load(str(random_sync_model_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelLoadError, match=AV_METADATA_KEY):
        OnnxSyncModel(tmp_path / "bare.onnx")


def test_sync_config_is_written_from_the_model_and_served_by_the_cpu_variant(
    tmp_path, random_sync_model_path
):
    model_dir = tmp_path / "repo" / "av_sync"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").symlink_to(random_sync_model_path)
    config_path = write_sync_config(model_dir, max_batch_size=4)
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    assert config.name == "av_sync" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    t = default_sync_meta().clip_len
    assert [(i.name, list(i.dims)) for i in config.input] == [("mouth", [t, 48, 96]), ("mel", [-1, 80, 64])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("sync_logits", [-1])]
    meta = SyncMeta.from_json(config.parameters[AV_METADATA_KEY].string_value)
    assert meta == default_sync_meta()

    assert generate_cpu_repository(tmp_path / "repo", tmp_path / "cpu") == ["av_sync"]
    cpu = text_format.Parse(
        (tmp_path / "cpu" / "av_sync" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert cpu.backend == "python" and cpu.parameters[AV_METADATA_KEY] == config.parameters[AV_METADATA_KEY]
    assert cpu.parameters["model_sha256"].string_value == file_sha256(random_sync_model_path)


def test_the_shipped_sync_config_carries_the_shipped_models_metadata():
    """Triton reads SyncMeta from config.pbtxt, the CLI from the ONNX file: a re-exported model with a new
    calibration and a stale config would give the services other scores than the CLI."""
    from inference.onnx_backend import onnx_session
    from inference.sync_backend import read_sync_meta
    from preprocessor.settings import DEFAULT_SYNC_MODEL_PATH

    if not DEFAULT_SYNC_MODEL_PATH.is_file():
        pytest.skip(f"no shipped sync model at {DEFAULT_SYNC_MODEL_PATH}")
    config_path = DEFAULT_SYNC_MODEL_PATH.parents[1] / "config.pbtxt"
    assert config_path.is_file(), (
        "run `python -m inference.triton_launcher sync-config` and commit av_sync/config.pbtxt"
    )
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    shipped = read_sync_meta(onnx_session(DEFAULT_SYNC_MODEL_PATH, threads=1), DEFAULT_SYNC_MODEL_PATH)
    assert SyncMeta.from_json(config.parameters[AV_METADATA_KEY].string_value) == shipped, (
        "av_sync/config.pbtxt is stale: run `python -m inference.triton_launcher sync-config` and commit it"
    )
    assert [list(i.dims) for i in config.input] == [[shipped.clip_len, *shipped.mouth], [-1, 80, 64]]
