"""ONNX export: contract (names, dtypes, dynamic B and T), metadata, Triton config, torch agreement.

A tiny random-weight model keeps this fast; the shipped model in model_repository/ is checked too when
it is present (it is committed, so normally it is).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

from deepfake.contracts.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_BLEND,
    OUTPUT_CLIP,
    OUTPUT_FRAMES,
    ModelMeta,
)
from training.config import REPO_ROOT, get_config
from training.export import build_meta, config_pbtxt, export, verify_onnx
from training.model import build_model

SHIPPED = REPO_ROOT / "model_repository" / "deepfake_detector"


def parse_triton_config(text: str):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, torch.nn.Module, Path]:
    root = tmp_path_factory.mktemp("export")
    cfg = get_config("tiny", out_dir=str(root / "run"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = root / "final.pt"
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg)}, ckpt)
    (root / "calibration.json").write_text(
        '{"temperature": 1.7, "threshold": 0.42, "val_crops": {"auc": 0.5}}'
    )
    summary = export(ckpt, root / "repo", version="test-1")
    return summary, model, root / "repo" / "deepfake_detector"


def test_onnx_matches_torch_for_dynamic_batch_and_frames(exported) -> None:
    summary, model, repo = exported
    sess = ort.InferenceSession(str(repo / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for b, t in ((1, 1), (5, 4), (2, 3)):
        x = rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)
        clip, frames, blend = sess.run([OUTPUT_CLIP, OUTPUT_FRAMES, OUTPUT_BLEND], {INPUT_NAME: x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        assert clip.shape == (b,) and frames.shape == (b, t) and blend.shape == (b, t, 8, 8)
        assert np.abs(clip - ref["clip_logit"].numpy()).max() < 1e-3
        assert np.abs(frames - ref["frame_logits"].numpy()).max() < 1e-3
        assert blend.min() >= 0.0 and blend.max() <= 1.0
    assert summary["max_abs_diff"] < 1e-3


def test_onnx_io_contract_and_metadata(exported) -> None:
    _, _, repo = exported
    proto = onnx.load(str(repo / "1" / "model.onnx"))
    inp = proto.graph.input[0]
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and frames
    assert [d.dim_value for d in dims[2:]] == [64, 64, 3]
    assert [o.name for o in proto.graph.output] == [OUTPUT_CLIP, OUTPUT_FRAMES, OUTPUT_BLEND]
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_json(props[METADATA_KEY])
    assert (meta.temperature, meta.threshold, meta.version) == (1.7, 0.42, "test-1")
    assert meta.clip_len == 4 and meta.crop.size == 64


def test_triton_config_parses_and_carries_metadata(exported) -> None:
    _, _, repo = exported
    cfg = parse_triton_config((repo / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert list(cfg.input[0].dims) == [-1, 64, 64, 3]
    assert cfg.HasField("dynamic_batching")
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    meta = ModelMeta.from_json(cfg.parameters[METADATA_KEY].string_value)
    assert meta.threshold == 0.42


def test_verify_catches_a_wrong_export(exported, tmp_path: Path) -> None:
    """The agreement check is not vacuous: another model's weights against this file fail it."""
    _, model, repo = exported
    other = build_model(get_config("tiny")).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pytest.raises(RuntimeError, match="disagree"):
        verify_onnx(other, repo / "1" / "model.onnx", clip_len=4)


def test_residual_input_exports_with_the_same_contract(tmp_path: Path) -> None:
    """A model with the noise-residual stem exports, agrees with torch and keeps the I/O contract."""
    cfg = get_config("tiny", out_dir=str(tmp_path / "run"), residual_input=True)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.residual_stem is not None
    with torch.no_grad():
        model.residual_stem.weight.normal_(0, 0.1)  # the branch must matter for the check to mean anything
    ckpt = tmp_path / "final.pt"
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg)}, ckpt)
    (tmp_path / "calibration.json").write_text('{"temperature": 1.0, "threshold": 0.5}')
    summary = export(ckpt, tmp_path / "repo", version="test-residual")
    assert summary["max_abs_diff"] < 1e-3
    sess = ort.InferenceSession(
        str(tmp_path / "repo" / "deepfake_detector" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    assert {o.name for o in sess.get_outputs()} == {OUTPUT_CLIP, OUTPUT_FRAMES, OUTPUT_BLEND}


def test_pbtxt_escapes_metadata_json() -> None:
    meta = build_meta(get_config("tiny"), None, 'v"1\\x')
    cfg = parse_triton_config(config_pbtxt(meta))
    assert ModelMeta.from_json(cfg.parameters[METADATA_KEY].string_value).version == 'v"1\\x'


@pytest.mark.skipif(
    not (SHIPPED / "1" / "model.onnx").is_file(), reason="no shipped model in model_repository/"
)
def test_shipped_model_contract() -> None:
    path = SHIPPED / "1" / "model.onnx"
    assert path.stat().st_size < 31 * 1024 * 1024
    proto = onnx.load(str(path), load_external_data=False)
    meta = ModelMeta.from_json({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    cfg = parse_triton_config((SHIPPED / "config.pbtxt").read_text())
    assert ModelMeta.from_json(cfg.parameters[METADATA_KEY].string_value) == meta
    assert 0 < meta.threshold < 1 and meta.temperature > 0
    s = meta.crop.size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for t in (1, meta.clip_len):
        x = np.random.default_rng(t).integers(0, 256, (2, t, s, s, 3), dtype=np.uint8)
        clip, frames, blend = sess.run(None, {INPUT_NAME: x})
        assert clip.shape == (2,) and frames.shape == (2, t) and np.isfinite(clip).all()


def test_shipped_blend_map_is_higher_on_blended_faces(data_dir: Path) -> None:
    """The model card's localisation check, on a few faces: the shipped map lights up where a face was
    self-blended more than on untouched faces."""
    from training.blend_map_check import DEFAULT_MODEL, measure

    res = measure(DEFAULT_MODEL, data_dir, n=24)
    assert res["n"] == 24 and 0.0 <= res["mean_iou"] <= 1.0
    assert res["mean_map_blended"] > res["mean_map_real"]
    assert res["mean_map_inside_mask"] > res["mean_map_blended"]
