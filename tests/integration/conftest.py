"""One real stack per test session: tritonserver, the preprocessor and the gateway as processes.

WHY session scope: starting Triton costs a few seconds of a 2-core machine; every integration test
shares one stack on free loopback ports and leaves it as it found it (the Triton-outage test restarts it).
The model is the random-weight test model with the deployed contract, in a temporary Triton repository.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli.local_stack import LocalStack, Ports
from deepfake.contracts.metadata import ModelMeta
from deepfake.settings import REPO_ROOT
from tests import synth
from tests.random_model import default_test_meta, write_random_model
from tests.synth_speech import mux_audio, speech_like

MODEL_NAME = "deepfake_detector"
SYNC_MODEL_NAME = "av_sync"


def write_test_repository(root: Path, meta: ModelMeta, max_batch_size: int = 8, sync: bool = False) -> Path:
    """A Triton repository in the deployed layout (platform onnxruntime_onnx, metadata parameter), with
    the blend-map output the shipped model has (evidence heatmaps); ``sync``: also the tiny audio-visual
    sync model as ``av_sync`` with its config.pbtxt written as the shipped one is (sync_config)."""
    if sync:
        from inference.triton_launcher import write_sync_config
        from tests.random_sync_model import write_random_sync_model

        write_random_sync_model(root / SYNC_MODEL_NAME / "1" / "model.onnx")
        write_sync_config(root / SYNC_MODEL_NAME, max_batch_size)
    model_path = write_random_model(root / MODEL_NAME / "1" / "model.onnx", meta, blend_map=True)
    escaped = meta.to_json().replace("\\", "\\\\").replace('"', '\\"')
    (root / MODEL_NAME / "config.pbtxt").write_text(
        f'name: "{MODEL_NAME}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        'input [ { name: "clips" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ] } ]\n'
        "output [\n"
        '  { name: "clip_logit" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } },\n'
        '  { name: "frame_logits" data_type: TYPE_FP32 dims: [ -1 ] },\n'
        '  { name: "blend_map" data_type: TYPE_FP32 dims: [ -1, -1, -1 ] }\n'
        "]\n"
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        f'parameters {{ key: "deepfake" value {{ string_value: "{escaped}" }} }}\n'
    )
    return model_path


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_repository")
    write_test_repository(root, default_test_meta(), sync=True)
    return root


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, test_repository: Path, default_detector) -> LocalStack:
    """The running stack; `default_detector` skips the tests (with the reason) without detector weights."""
    stack = LocalStack(
        run_dir=tmp_path_factory.mktemp("stack"),
        repository=test_repository,
        ports=Ports.free(),
        api_key=secrets.token_urlsafe(16),
        env={
            "DEEPFAKE_WORKERS": "1",
            "DEEPFAKE_JOB_WORKERS": "1",
            "DEEPFAKE_RATE_LIMIT_PER_MINUTE": "1000",
            "DEEPFAKE_JOB_RETRY_BACKOFF_MAX_S": "2",  # outage tests: a job notices recovery quickly
            "DEEPFAKE_JOB_LEASE_S": "3",  # crash test: the killed gateway's job is released within seconds
        },
    )
    try:
        stack.up(timeout_s=120)
    except RuntimeError:
        stack.down()
        raise
    yield stack
    stack.down()


@pytest.fixture()
def gateway(stack: LocalStack) -> httpx.Client:
    with httpx.Client(
        base_url=stack.urls["gateway"], headers={"X-API-Key": stack.api_key}, timeout=120
    ) as client:
        yield client


@pytest.fixture(scope="session")
def stack_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stack_videos")
    return {
        # Speech-like audio: the audio-visual signal scores it, so the parity tests cover both signals.
        "face": mux_audio(
            synth.write_face_video(root / "face_silent.mp4", n_frames=40).path,
            root / "face.mp4",
            speech_like(1.6),
        ),
        "two": synth.write_two_faces_video(root / "two.mp4", n_frames=30).path,
    }


def cli_result(video: Path, model_path: Path, sync_model_path: Path | None = None) -> dict:
    """What `deepfake detect --json` prints for `video` with the in-process ONNX Runtime backends (the
    sync model at ``sync_model_path``; None: the audio signal off)."""
    sync = ["--sync-model", str(sync_model_path)] if sync_model_path else ["--no-audio"]
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "detect", "--json", "--no-progress",
         "--model", str(model_path), *sync, str(video)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])
