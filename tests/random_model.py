"""A tiny random-weight ONNX model with exactly the deployed model's contract
(deepfake/contracts/metadata.py).

Why: the pipeline, the ONNX Runtime backend, the Triton backend and the services must be testable before
(and independently of) the trained model. This model has the same input/output names, dtypes, dynamic
batch and clip length, and the same ``deepfake`` metadata key, so every piece of plumbing is exercised
for real. Its output depends on the pixels (mean colour per frame through a random linear layer), so a
test can check that the right crops reached the right outputs with :func:`reference_logits`.

Graph: clips uint8 [B, T, H, W, 3] -> float /255 -> mean over H, W -> [B, T, 3] -> @ W[3, 1] + b
-> frame_logits [B, T]; clip_logit [B] = mean over T of frame_logits. With ``blend_map=True`` it also
outputs blend_map [B, T, H, W] = the pixels' brightness in [0, 1] (the contract's localisation output, so
evidence heatmaps can be checked against :func:`reference_blend_map`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepfake.contracts.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_BLEND,
    OUTPUT_CLIP,
    OUTPUT_FRAMES,
    CropPolicy,
    ModelMeta,
)

OPSET = 17


def random_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The model's weights for ``seed``: W [3, 1] and bias [1], float32, scaled so logits span a few units."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((3, 1)) * 4.0).astype(np.float32)
    bias = (rng.standard_normal((1,)) * 0.5).astype(np.float32)
    return weight, bias


def default_test_meta(crop_size: int = 64, clip_len: int = 8) -> ModelMeta:
    """Metadata for a test model: a small crop size keeps tests fast; everything else is the default."""
    return ModelMeta(
        name="random_test_model",
        version="test",
        clip_len=clip_len,
        crop=CropPolicy(size=crop_size),
        training_data="none: random weights for plumbing tests",
    )


def build_random_model(
    meta: ModelMeta | None = None, seed: int = 0, blend_map: bool = False
) -> onnx.ModelProto:
    """The ONNX graph (see module docstring) with ``meta`` stored under metadata_props key ``deepfake``."""
    meta = meta or default_test_meta()
    size = meta.crop.size
    weight, bias = random_weights(seed)
    clips = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", "T", size, size, 3])
    clip_logit = helper.make_tensor_value_info(OUTPUT_CLIP, TensorProto.FLOAT, ["batch"])
    frame_logits = helper.make_tensor_value_info(OUTPUT_FRAMES, TensorProto.FLOAT, ["batch", "T"])
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x_float", "c255"], ["x_unit"]),
        helper.make_node("ReduceMean", ["x_unit"], ["colour"], axes=[2, 3], keepdims=0),  # [B, T, 3]
        helper.make_node("MatMul", ["colour", "weight"], ["proj"]),  # [B, T, 1]
        helper.make_node("Add", ["proj", "bias"], ["proj_b"]),
        helper.make_node("Squeeze", ["proj_b", "axis_last"], [OUTPUT_FRAMES]),  # [B, T]
        helper.make_node("ReduceMean", [OUTPUT_FRAMES], [OUTPUT_CLIP], axes=[1], keepdims=0),  # [B]
    ]
    initializers = [
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "c255"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_last"),
    ]
    outputs = [clip_logit, frame_logits]
    if blend_map:
        nodes.append(helper.make_node("ReduceMean", ["x_unit"], [OUTPUT_BLEND], axes=[4], keepdims=0))
        outputs.append(
            helper.make_tensor_value_info(OUTPUT_BLEND, TensorProto.FLOAT, ["batch", "T", size, size])
        )
    graph = helper.make_graph(nodes, "random_deepfake_detector", [clips], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    return model


def write_random_model(
    path: Path, meta: ModelMeta | None = None, seed: int = 0, blend_map: bool = False
) -> Path:
    """Build the random model and save it to ``path`` (parents created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_random_model(meta, seed, blend_map), str(path))
    return path


def reference_blend_map(clips: np.ndarray) -> np.ndarray:
    """The blend map the model outputs for ``clips`` with ``blend_map=True``: [B, T, H, W] brightness."""
    return clips.astype(np.float32).mean(axis=4) / 255.0


def reference_logits(clips: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What the model must output for ``clips`` [B, T, H, W, 3] uint8, computed with numpy:
    (clip_logit [B], frame_logits [B, T])."""
    weight, bias = random_weights(seed)
    colour = clips.astype(np.float32).mean(axis=(2, 3)) / 255.0
    frames = (colour @ weight)[..., 0] + bias[0]
    return frames.mean(axis=1), frames
