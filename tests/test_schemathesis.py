"""Schemathesis against the gateway's OpenAPI document (issue 10): what the document promises, the gateway
keeps, for requests nobody wrote by hand.

Everything is real and on loopback: the preprocessor service (ONNX Runtime backend, random-weight model)
and the gateway each run under uvicorn as processes of their own (tests/test_gateway_replicas.Service),
and `schemathesis run` loads the document from the running gateway (`GET /openapi.json`, whose `servers`
names that gateway). All four of its phases run: the documented examples, coverage (boundary and invalid
values of every parameter, missing and wrong headers, undocumented methods), fuzzing, and stateful
workflows over the links it infers (submit a job, then read, list, report and delete it). The checks are
in tests/schemathesis.toml: no 5xx; status codes, content types, headers and bodies as documented;
schema-valid requests accepted and invalid ones refused; auth not ignored; `Allow` on 405; a deleted job
gone. `file` parts are drawn from small real videos too (tests/schemathesis_hooks.py), so analyses run
and their results are checked against `DetectionResult`.

Settings of the gateway, and why:
- no callback secret: every `callback_url` is refused with 422 `callbacks_disabled` before its host is
  resolved, so nothing is looked up or contacted beyond loopback;
- no rate limit and no failed-auth throttle: Schemathesis sends hundreds of requests from 127.0.0.1,
  wrong keys among them on purpose (`ignored_auth`); with the limits on, the rest would be 429s,
  documented but testing nothing else (the limits have tests of their own, tests/test_gateway.py).

Schemathesis' pytest plugin cannot run here (4.32 sets `request.node._nodeid`, which pytest 9 removed),
so the test runs its command line (`make fuzz-api` runs this same test, longer).

Bounded: `DEEPFAKE_FUZZ_API_EXAMPLES` cases per operation and phase (default 10) from a fixed seed.
`make fuzz-api` sets `DEEPFAKE_FUZZ_API_MAX_TIME_S`, a time budget that Schemathesis spends whole (its
fuzzing and stateful phases repeat until it is gone), from a random seed (`DEEPFAKE_FUZZ_RANDOM=1`); the
output names the seed and gives a `curl` line for every failure.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deepfake.settings import REPO_ROOT
from tests.settings import SuiteSettings
from tests.test_gateway_replicas import Service

CONFIG = REPO_ROOT / "tests" / "schemathesis.toml"
KEY = "schemathesis-key"
SUITE = SuiteSettings()
EXAMPLES = SUITE.fuzz_api_examples
MAX_TIME_S = SUITE.fuzz_api_max_time_s  # None: no budget, EXAMPLES bound the run
SEED = random.randrange(2**31) if SUITE.fuzz_random else 20261201


@pytest.fixture(scope="module")
def stack(tmp_path_factory, random_model_path, default_detector) -> Iterator[list[Service]]:
    """The real preprocessor and gateway under uvicorn on 127.0.0.1, the gateway last."""
    root = tmp_path_factory.mktemp("schemathesis")
    logs = root / "logs"
    logs.mkdir()
    preprocessor = Service(
        "preprocessor",
        "tests.onnx_preprocessor:create_app",
        {
            "DEEPFAKE_MODEL_PATH": str(random_model_path),
            "DEEPFAKE_WORKERS": "1",
            "DEEPFAKE_THREADS": "1",
            "DEEPFAKE_UPLOAD_DIR": str(root / "preprocessor-spool"),
        },
        logs,
    )
    services = [preprocessor]
    try:
        preprocessor.wait_ready()
        gateway = Service(
            "gateway",
            "gateway.app:create_app",
            {
                "DEEPFAKE_API_KEYS": KEY,
                "DEEPFAKE_PREPROCESSOR_URL": preprocessor.url,
                "DEEPFAKE_JOB_STORE_URL": f"sqlite:///{root / 'jobs.sqlite'}",
                "DEEPFAKE_UPLOAD_DIR": str(root / "uploads"),
                "DEEPFAKE_JOB_WORKERS": "1",
                "DEEPFAKE_JOB_POLL_S": "0.2",
                "DEEPFAKE_RATE_LIMIT_PER_MINUTE": "0",
                "DEEPFAKE_AUTH_FAILURE_LIMIT": "0",
            },
            logs,
        )
        services.append(gateway)
        gateway.wait_ready()
        yield services
    finally:
        for service in reversed(services):
            service.stop()


def run_schemathesis(url: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{url}/openapi.json", "--header", f"X-API-Key: {KEY}",
        "--max-examples", str(EXAMPLES), "--seed", str(SEED),
        "--report", "junit", "--report-dir", str(report_dir),
    ]  # fmt: skip
    if MAX_TIME_S:
        command += ["--max-time", f"{MAX_TIME_S:g}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env["PYTHONPATH"] = str(REPO_ROOT)  # the hooks module (tests.schemathesis_hooks)
    timeout_s = int(MAX_TIME_S) + 300 if MAX_TIME_S else 400
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


def test_the_gateway_keeps_its_openapi_contract(stack, tmp_path) -> None:
    gateway = stack[-1]
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    run = run_schemathesis(gateway.url, tmp_path / "report")
    output = run.stdout + run.stderr
    summary = output[-3000:]
    assert run.returncode == 0, f"schemathesis failed (seed {SEED}):\n{output[-20000:]}"
    assert f"Tested: {operations}\n" in output, summary  # every documented operation was exercised
    assert "Stateful" in output, summary
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and counts[1] == counts[2] and int(counts[1]) >= operations * EXAMPLES, summary
    assert list((tmp_path / "report").glob("junit*.xml")), "no JUnit report"
    print(f"\nschemathesis, seed {SEED}, {EXAMPLES} per operation: {counts[0]}")
    print(output[output.rfind("Test Phases:") :])
    for service in stack:  # alive, and nothing went wrong out of sight (a job, a background task)
        assert service.poll() is None, f"{service.name} died:\n{service.log_tail()}"
        assert "Traceback" not in service.log_path.read_text(errors="replace"), service.log_tail()
    log = gateway.log_path.read_text(errors="replace")
    answers = Counter(re.findall(r'HTTP/1\.1" (\d{3}) ', log))
    print("gateway answers:", ", ".join(f"{status} x {n}" for status, n in sorted(answers.items())))
    analysed = len(re.findall(r'"POST /v1/detections HTTP/1\.1" 200 ', log))
    print(f"synchronous analyses answered 200: {analysed}")
