"""The in-process ONNX Runtime backend against the random-weight model's numpy reference."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from deepfake.contracts.metadata import METADATA_KEY
from inference.onnx_backend import ModelLoadError, OnnxBackend
from tests.random_model import build_random_model, reference_logits


def test_outputs_match_the_reference_for_any_batch_and_clip_length(random_model_path):
    backend = OnnxBackend(random_model_path, threads=1)
    rng = np.random.default_rng(1)
    for batch, frames in [(1, 8), (3, 8), (2, 3)]:
        clips = rng.integers(0, 256, size=(batch, frames, 64, 64, 3), dtype=np.uint8)
        out = backend.infer(clips)
        clip_ref, frame_ref = reference_logits(clips)
        assert out.clip_logits.shape == (batch,) and out.frame_logits.shape == (batch, frames)
        np.testing.assert_allclose(out.clip_logits, clip_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.frame_logits, frame_ref, rtol=1e-4, atol=1e-5)
        assert out.blend_maps is None


def test_metadata_and_checksum_come_from_the_file(random_model_path):
    backend = OnnxBackend(random_model_path)
    assert backend.meta.crop.size == 64 and backend.meta.clip_len == 8
    assert backend.info.sha256 == hashlib.sha256(random_model_path.read_bytes()).hexdigest()
    assert backend.info.backend == "onnxruntime" and backend.info.name == "random_test_model"


def test_wrong_input_is_refused_with_the_expected_shape(random_model_path):
    backend = OnnxBackend(random_model_path)
    with pytest.raises(ValueError, match=r"uint8 \[B, T, 64, 64, 3\]"):
        backend.infer(np.zeros((1, 8, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        backend.infer(np.zeros((1, 8, 64, 64, 3), dtype=np.float32))


def test_missing_model_names_the_path_and_the_flag(tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing\.onnx.*--model"):
        OnnxBackend(tmp_path / "missing.onnx")


def test_model_without_metadata_is_refused(tmp_path):
    model = build_random_model()
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelLoadError, match="metadata"):
        OnnxBackend(tmp_path / "bare.onnx")


def test_garbage_file_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxBackend(tmp_path / "junk.onnx")
