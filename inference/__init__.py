"""How the pipeline reaches a model: in-process ONNX Runtime, or NVIDIA Triton over gRPC."""
