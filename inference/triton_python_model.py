"""Triton Python-backend model that runs the exported ONNX file with ONNX Runtime.

WHY it exists: the `tritonserver` bundled with nvidia-pytriton has only the Python backend, so on a
CPU machine without the NGC image the repository's `model.onnx` cannot be served by the
onnxruntime backend. `inference.triton_launcher` copies this file next to the ONNX file as
`model.py` in a generated repository variant; the same `model.onnx` is then run by ONNX Runtime
inside Triton, with dynamic batching and metrics still handled by Triton itself.

It serves every model of the repository alike (the visual model's one input ``clips``, the sync model's
``mouth`` and ``mel``): input and output names come from the model's config.pbtxt.

This file is only ever imported by Triton's Python-backend stub (it needs
`triton_python_backend_utils`, which exists only there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One ONNX Runtime session per model instance; requests of equal shape run as one batch."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        # Threads per instance are explicit: the machine is shared with the preprocessor's own work.
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [entry["name"] for entry in config["input"]]
        available = {output.name for output in self.session.get_outputs()}
        self.output_names = [out["name"] for out in config["output"] if out["name"] in available]
        missing = [out["name"] for out in config["output"] if out["name"] not in available]
        if missing:
            raise pb_utils.TritonModelException(
                f"config.pbtxt declares outputs the ONNX file lacks: {missing}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [
            [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names]
            for request in requests
        ]
        responses: list[Any] = [None] * len(requests)
        # Dynamic batching hands over several requests at once; those whose inputs share their shapes
        # (all but the batch axis) are concatenated into one ONNX Runtime call (the whole point of
        # batching on a CPU).
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for index, arrays in enumerate(inputs):
            groups.setdefault(tuple(tuple(a.shape[1:]) for a in arrays), []).append(index)
        for indices in groups.values():
            try:
                feed = {
                    name: np.concatenate([inputs[i][k] for i in indices], axis=0)
                    for k, name in enumerate(self.input_names)
                }
                outputs = self.session.run(self.output_names, feed)
            except Exception as exc:  # one bad group must not fail the other requests
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"inference failed: {exc}")
                    )
                continue
            start = 0
            for i in indices:
                stop = start + inputs[i][0].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value[start:stop]))
                    for name, value in zip(self.output_names, outputs, strict=True)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def finalize(self) -> None:
        self.session = None
