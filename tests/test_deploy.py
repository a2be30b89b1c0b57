"""Deployment artefacts, validated offline: Kubernetes overlays, Compose file, Dockerfiles.

Every overlay is rendered by `kubectl kustomize` and checked against the Kubernetes schemas
(kubernetes-validate) and the stack's invariants (deploy/validate.py). Each invariant is also shown to
FAIL on a deliberately broken copy, so a checker that accepts everything cannot pass these tests.
Runs in a few seconds; no cluster, no Docker engine.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from deepfake.settings import REPO_ROOT


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


validate = _load("deploy_validate", REPO_ROOT / "deploy" / "validate.py")
requirements_script = _load(
    "requirements_from_pyproject", REPO_ROOT / "docker" / "requirements_from_pyproject.py"
)

OVERLAYS = validate.overlay_names()
GPU_OVERLAYS = [name for name in OVERLAYS if name.startswith("gpu")]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: validate.render(validate.OVERLAYS_DIR / name) for name in OVERLAYS}


def _get(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def _container(objects: list[dict], deployment: str) -> dict:
    return _get(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


# --- Kubernetes: every overlay builds, passes the schemas and the invariants -------------------------


def test_the_expected_overlays_exist() -> None:
    assert {"cpu-dev", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_kubernetes_schemas(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    assert len(objects) > 10
    assert validate.schema_problems(objects) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_invariants_hold(rendered: dict, overlay: str) -> None:
    assert validate.invariant_problems(rendered[overlay], gpu=overlay in GPU_OVERLAYS) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_and_limits(rendered: dict, overlay: str) -> None:
    for deployment in [o for o in rendered[overlay] if o["kind"] == "Deployment"]:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert container.get(probe, {}).get("httpGet"), (deployment["metadata"]["name"], probe)
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_triton_gets_a_gpu_node_in_gpu_overlays(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    pod = _get(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    assert int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for other in ("gateway", "preprocessor"):
        assert "nvidia.com/gpu" not in _container(objects, other)["resources"]["limits"]


def test_cpu_dev_requests_no_gpu(rendered: dict) -> None:
    assert "nvidia.com/gpu" not in _container(rendered["cpu-dev"], "triton")["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_external(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    for service in [o for o in objects if o["kind"] == "Service"]:
        if service["metadata"]["name"] != "gateway":
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    ingress = _get(objects, "Ingress", "gateway")
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"gateway"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpas_and_api_key_secret(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert targets == {"gateway", "preprocessor", "triton"}
    env = {e["name"]: e for e in _container(objects, "gateway")["env"]}
    assert env["DEEPFAKE_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "deepfake-api-keys"
    # The preprocessor's service token: one Secret, read by both sides.
    for deployment in ("gateway", "preprocessor"):
        env = {e["name"]: e for e in _container(objects, deployment)["env"]}
        assert env["DEEPFAKE_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "deepfake-service-token",
            "key": "token",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_and_preprocessor_egress_is_restricted(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    gateway = _get(objects, "NetworkPolicy", "gateway-egress")["spec"]
    assert gateway["policyTypes"] == ["Egress"]
    to_preprocessor, dns, public = gateway["egress"]
    assert to_preprocessor["to"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "preprocessor"
    }
    assert {p["port"] for p in dns["ports"]} == {53}
    assert public["ports"] == [{"protocol": "TCP", "port": 443}]
    blocks = {b["ipBlock"]["cidr"]: set(b["ipBlock"]["except"]) for b in public["to"]}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= blocks["0.0.0.0/0"]
    assert {"fc00::/7", "fe80::/10"} <= blocks["::/0"]
    preprocessor = _get(objects, "NetworkPolicy", "preprocessor-egress")["spec"]
    peers = [peer for rule in preprocessor["egress"] for peer in rule["to"]]
    assert not any("ipBlock" in peer for peer in peers)
    assert {"app.kubernetes.io/name": "triton"} in [
        p.get("podSelector", {}).get("matchLabels") for p in peers
    ]
    # The new gateway settings ship with their defaults; the callback key comes from an optional Secret.
    settings = _get(objects, "ConfigMap", "gateway-settings")["data"]
    from gateway.settings import GatewaySettings

    for field in (
        "upload_read_timeout_s",
        "upload_orphan_age_s",
        "upload_sweep_interval_s",
        "job_retry_budget_s",
    ):
        assert float(settings[f"DEEPFAKE_{field.upper()}"]) == GatewaySettings.model_fields[field].default
    env = {e["name"]: e for e in _container(objects, "gateway")["env"]}
    ref = env["DEEPFAKE_CALLBACK_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "deepfake-callback-secret", "key": "secret", "optional": True}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_public_ingress_routes_the_api_only(rendered: dict, overlay: str) -> None:
    ingress = _get(rendered[overlay], "Ingress", "gateway")
    paths = {(p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {("/v1", "Prefix"), ("/", "Exact"), ("/static", "Prefix")}
    assert "defaultBackend" not in ingress["spec"]
    # In the cluster, the gateway Service still serves every path (port 8080, Prometheus and probes).
    assert {p["port"] for p in _get(rendered[overlay], "Service", "gateway")["spec"]["ports"]} == {8080}


def test_the_docs_may_be_published_with_the_annotation_but_metrics_never(rendered: dict) -> None:
    def add_paths(*paths: str, annotate: bool):
        def edit(ingress: dict) -> None:
            rule = ingress["spec"]["rules"][0]["http"]["paths"]
            for path in paths:
                rule.append({**rule[0], "path": path, "pathType": "Exact"})
            if annotate:
                ingress["metadata"].setdefault("annotations", {})["deepfake.io/public-docs"] = "true"

        return _break(rendered["gpu"], "Ingress", "gateway", edit)

    docs = ("/docs", "/openapi.json")
    assert validate.invariant_problems(add_paths(*docs, annotate=True), gpu=True) == []
    problems = validate.invariant_problems(add_paths(*docs, annotate=False), gpu=True)
    assert any("exposes /docs" in p for p in problems) and any("exposes /openapi.json" in p for p in problems)
    problems = validate.invariant_problems(add_paths("/metrics", annotate=True), gpu=True)
    assert any("exposes /metrics" in p for p in problems)


def test_gpu_s3_reads_the_repository_from_the_object_store(rendered: dict) -> None:
    objects = rendered["gpu-s3"]
    assert _get(objects, "ConfigMap", "triton-settings")["data"]["MODEL_REPOSITORY"].startswith("s3://")
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims == {"gateway-data"}
    pod = _get(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    assert "model-repository" not in {v["name"] for v in pod["volumes"]}
    assert "/models" not in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}


def test_monitoring_serves_the_metric_the_triton_hpa_uses(rendered: dict) -> None:
    monitoring = validate.render(validate.MONITORING_DIR)
    assert validate.schema_problems(monitoring) == []
    assert validate.monitoring_problems(monitoring, rendered["gpu"]) == []


# --- The checker fails on broken manifests (so the tests above can fail) -----------------------------


def _break(objects: list[dict], kind: str, name: str, edit) -> list[dict]:
    broken = copy.deepcopy(objects)
    edit(_get(broken, kind, name))
    return broken


def _pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def _replace_env(container: dict, entry: dict) -> None:
    """Replace the container's env entry of the same name (wherever it sits in the list)."""
    env = container["env"]
    env[next(i for i, e in enumerate(env) if e["name"] == entry["name"])] = entry


BREAKAGES = {
    "no readiness probe": (
        "Deployment",
        "preprocessor",
        lambda o: _pod(o)["containers"][0].pop("readinessProbe"),
        "no readinessProbe",
    ),
    "wrong probe path": (
        "Deployment",
        "gateway",
        lambda o: _pod(o)["containers"][0]["readinessProbe"]["httpGet"].update(path="/"),
        "readinessProbe path",
    ),
    "no memory limit": (
        "Deployment",
        "gateway",
        lambda o: _pod(o)["containers"][0]["resources"]["limits"].pop("memory"),
        "resources.limits lacks ['memory']",
    ),
    "triton without gpu": (
        "Deployment",
        "triton",
        lambda o: _pod(o)["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu"),
        "must request nvidia.com/gpu",
    ),
    "triton without toleration": (
        "Deployment",
        "triton",
        lambda o: _pod(o).pop("tolerations"),
        "toleration",
    ),
    "preprocessor load balancer": (
        "Service",
        "preprocessor",
        lambda o: o["spec"].update(type="LoadBalancer"),
        "only the gateway",
    ),
    "triton open to the world": (
        "NetworkPolicy",
        "triton-from-preprocessor",
        lambda o: o["spec"]["ingress"].append({"ports": [{"port": 8000}]}),
        "admits external traffic",
    ),
    "no triton hpa": (
        "HorizontalPodAutoscaler",
        "triton",
        lambda o: o["spec"]["scaleTargetRef"].update(name="nothing"),
        "no HorizontalPodAutoscaler for Deployment/triton",
    ),
    "api keys inline": (
        "Deployment",
        "gateway",
        lambda o: _pod(o)["containers"][0].update(env=[{"name": "DEEPFAKE_API_KEYS", "value": "k"}]),
        "must come from a Secret",
    ),
    "service token inline": (
        "Deployment",
        "preprocessor",
        lambda o: _pod(o)["containers"][0].update(env=[{"name": "DEEPFAKE_SERVICE_TOKEN", "value": "t"}]),
        "preprocessor: DEEPFAKE_SERVICE_TOKEN must come from a Secret",
    ),
    "service token from different secrets": (
        "Deployment",
        "preprocessor",
        lambda o: _pod(o)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"].update(name="other"),
        "DEEPFAKE_SERVICE_TOKEN comes from another Secret key",
    ),
    "ingress routes every path": (
        "Ingress",
        "gateway",
        lambda o: o["spec"]["rules"][0]["http"]["paths"][-1].update(pathType="Prefix"),  # "/"
        "path '/' (Prefix) exposes /metrics publicly",
    ),
    "job store url inline": (
        "Deployment",
        "gateway",
        lambda o: _pod(o)["containers"][0]["env"].append(
            {"name": "DEEPFAKE_JOB_STORE_URL", "value": "postgresql://u:pw@db:5432/jobs"}
        ),
        "DEEPFAKE_JOB_STORE_URL names a database outside a Secret",
    ),
    "job store url in the configmap as well": (
        "ConfigMap",
        "gateway-settings",
        lambda o: o["data"].update(DEEPFAKE_JOB_STORE_URL="sqlite:////data/jobs.sqlite"),
        "DEEPFAKE_JOB_STORE_URL is both in ConfigMap/gateway-settings and a Secret",
    ),
    "replicas with uploads on a single-node volume": (
        "PersistentVolumeClaim",
        "gateway-data",
        lambda o: o["spec"].update(accessModes=["ReadWriteOnce"]),
        "are not on a ReadWriteMany PersistentVolumeClaim",
    ),
    "replicas with uploads on an emptyDir": (
        "Deployment",
        "gateway",
        lambda o: _pod(o).update(volumes=[{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]),
        "are not on a ReadWriteMany PersistentVolumeClaim",
    ),
    "gateway egress to everything": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 80}]}),
        "without `to` lets gateway reach everything",
    ),
    "gateway egress to the metadata address": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"][2]["to"][0]["ipBlock"]["except"].remove("169.254.0.0/16"),
        "may reach the cloud metadata address 169.254.169.254",
    ),
    "gateway egress to in-cluster addresses": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"][2]["to"][0]["ipBlock"]["except"].remove("10.0.0.0/8"),
        "may reach the private/in-cluster range 10.0.0.0/8",
    ),
    "gateway egress on every port": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"][2].pop("ports"),
        "outside addresses on every port",
    ),
    "gateway egress to triton": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"][0]["to"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}}
        ),
        "gateway may reach ['triton']",
    ),
    "gateway egress to another namespace": (
        "NetworkPolicy",
        "gateway-egress",
        lambda o: o["spec"]["egress"][0]["to"].append({"namespaceSelector": {}}),
        "other namespaces beyond DNS",
    ),
    "preprocessor egress outside the cluster": (
        "NetworkPolicy",
        "preprocessor-egress",
        lambda o: o["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
        "preprocessor may reach addresses outside the cluster",
    ),
    "no preprocessor egress policy": (
        "NetworkPolicy",
        "preprocessor-egress",
        lambda o: o["spec"]["podSelector"].update(matchLabels={"app.kubernetes.io/name": "nothing"}),
        "Deployment/preprocessor: no Egress NetworkPolicy selects it",
    ),
    "callback secret inline": (
        "Deployment",
        "gateway",
        lambda o: _replace_env(_pod(o)["containers"][0], {"name": "DEEPFAKE_CALLBACK_SECRET", "value": "s"}),
        "gateway: DEEPFAKE_CALLBACK_SECRET must come from a Secret",
    ),
    "preprocessor memory budget over its limit": (
        "ConfigMap",
        "preprocessor-settings",
        lambda o: o["data"].update(DEEPFAKE_MEMORY_BUDGET_MB="3584"),
        "DEEPFAKE_MEMORY_BUDGET_MB 3584 + 1024 MiB for the process is over its memory limit 4Gi",
    ),
    "service selects nothing": (
        "Service",
        "triton",
        lambda o: o["spec"].update(selector={"app.kubernetes.io/name": "tritn"}),
        "does not select exactly one",
    ),
}


# The SQLite job store (cpu-dev keeps it): one replica, the file on a persistent volume.
SQLITE_BREAKAGES = {
    "gateway scaled out on sqlite": (
        "HorizontalPodAutoscaler",
        "gateway",
        lambda o: o["spec"].update(maxReplicas=3),
        "maxReplicas > 1 with the SQLite job store",
    ),
    "gateway replicas on sqlite": (
        "Deployment",
        "gateway",
        lambda o: o["spec"].update(replicas=2),
        "more than one replica with the SQLite job store",
    ),
    "job store on an emptyDir": (
        "Deployment",
        "gateway",
        lambda o: _pod(o).update(volumes=[{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]),
        "is not on a PersistentVolumeClaim",
    ),
}


@pytest.mark.parametrize(
    ("overlay", "case"),
    [("gpu", case) for case in sorted(BREAKAGES)] + [("cpu-dev", case) for case in sorted(SQLITE_BREAKAGES)],
)
def test_invariant_checker_catches(rendered: dict, overlay: str, case: str) -> None:
    kind, name, edit, expected = {**BREAKAGES, **SQLITE_BREAKAGES}[case]
    broken = _break(rendered[overlay], kind, name, edit)
    problems = validate.invariant_problems(broken, gpu=overlay in GPU_OVERLAYS)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_gpu_overlays_run_gateway_replicas_on_a_shared_store(rendered: dict, overlay: str) -> None:
    objects = rendered[overlay]
    gateway = _get(objects, "Deployment", "gateway")
    hpa = _get(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert gateway["spec"]["replicas"] >= 2 and hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > 2
    assert gateway["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in _container(objects, "gateway")["env"]}
    assert env["DEEPFAKE_JOB_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "deepfake-job-store",
        "key": "url",
    }
    settings = _get(objects, "ConfigMap", "gateway-settings")["data"]
    assert "DEEPFAKE_JOB_STORE_URL" not in settings and settings["DEEPFAKE_UPLOAD_DIR"] == "/data/uploads"
    assert _get(objects, "PersistentVolumeClaim", "gateway-data")["spec"]["accessModes"] == ["ReadWriteMany"]
    egress = _get(objects, "NetworkPolicy", "gateway-egress-job-store")["spec"]["egress"]
    assert egress == [
        {
            "to": [{"podSelector": {"matchLabels": {"deepfake.io/job-store": "true"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]
    # cpu-dev keeps SQLite and one replica.
    assert _get(rendered["cpu-dev"], "ConfigMap", "gateway-settings")["data"][
        "DEEPFAKE_JOB_STORE_URL"
    ].startswith("sqlite:")


def test_schema_check_catches_unknown_fields(rendered: dict) -> None:
    broken = _break(rendered["gpu"], "Deployment", "gateway", lambda o: _pod(o).update(nodeSelectr={}))
    assert any("Deployment/gateway" in p for p in validate.schema_problems(broken))


# --- rendering: the real kustomize (kubectl kustomize) --------------------------------------------


def test_render_reports_kustomize_errors(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(validate.RenderError, match="missing.yaml"):
        validate.render(tmp_path)


# --- Compose: the real binary accepts the file; the resolved model follows the rules -----------------


@pytest.fixture(scope="module")
def compose_model() -> dict:
    result = validate.compose_config({"DEEPFAKE_API_KEYS": "test-key", "DEEPFAKE_SERVICE_TOKEN": "svc"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_and_follows_the_rules(compose_model: dict) -> None:
    assert validate.compose_problems(compose_model) == []
    services = compose_model["services"]
    assert services["gateway"]["environment"]["DEEPFAKE_API_KEYS"] == "test-key"
    assert services["preprocessor"]["environment"]["DEEPFAKE_TRITON_URL"] == "triton:8001"
    assert services["gateway"]["depends_on"]["preprocessor"]["condition"] == "service_healthy"
    assert services["preprocessor"]["depends_on"]["triton"]["condition"] == "service_healthy"


def test_compose_refuses_to_start_without_api_keys() -> None:
    result = validate.compose_config({"DEEPFAKE_SERVICE_TOKEN": "svc"})
    assert result.returncode != 0
    assert "DEEPFAKE_API_KEYS" in result.stderr


def test_compose_refuses_to_start_without_the_service_token(compose_model: dict) -> None:
    result = validate.compose_config({"DEEPFAKE_API_KEYS": "test-key"})
    assert result.returncode != 0
    assert "DEEPFAKE_SERVICE_TOKEN" in result.stderr
    services = compose_model["services"]
    assert services["gateway"]["environment"]["DEEPFAKE_SERVICE_TOKEN"] == "svc"
    assert services["preprocessor"]["environment"]["DEEPFAKE_SERVICE_TOKEN"] == "svc"
    broken = copy.deepcopy(compose_model)
    broken["services"]["preprocessor"]["environment"]["DEEPFAKE_SERVICE_TOKEN"] = "other"
    assert any("DEEPFAKE_SERVICE_TOKEN" in p for p in validate.compose_problems(broken))


def test_compose_passes_the_callback_secret_and_job_store_settings(compose_model: dict) -> None:
    gateway = compose_model["services"]["gateway"]["environment"]
    assert gateway["DEEPFAKE_CALLBACK_SECRET"] == ""  # unset: callbacks are refused, the stack still starts
    assert gateway["DEEPFAKE_JOB_STORE_URL"] == "sqlite:////data/jobs.sqlite"
    assert gateway["DEEPFAKE_JOB_LEASE_S"] == "30"
    result = validate.compose_config(
        {
            "DEEPFAKE_API_KEYS": "k",
            "DEEPFAKE_SERVICE_TOKEN": "svc",
            "DEEPFAKE_CALLBACK_SECRET": "hook-key",
            "DEEPFAKE_JOB_STORE_URL": "postgresql://u:pw@db:5432/jobs",
        }
    )
    assert result.returncode == 0, result.stderr
    gateway = json.loads(result.stdout)["services"]["gateway"]["environment"]
    assert gateway["DEEPFAKE_CALLBACK_SECRET"] == "hook-key"
    assert gateway["DEEPFAKE_JOB_STORE_URL"] == "postgresql://u:pw@db:5432/jobs"
    broken = copy.deepcopy(compose_model)
    del broken["services"]["gateway"]["environment"]["DEEPFAKE_CALLBACK_SECRET"]
    assert any("DEEPFAKE_CALLBACK_SECRET is not passed" in p for p in validate.compose_problems(broken))


def test_compose_checker_catches_a_missing_gpu(compose_model: dict) -> None:
    broken = copy.deepcopy(compose_model)
    broken["services"]["triton"].pop("deploy")
    broken["services"]["preprocessor"]["ports"] = [
        {"target": 8081, "published": "8081", "host_ip": "0.0.0.0"}
    ]
    problems = validate.compose_problems(broken)
    assert any("GPU" in p for p in problems) and any("beyond loopback" in p for p in problems)


# --- Dockerfiles: what they copy exists, they run the service contract, no torch ---------------------

DOCKERFILES = {
    "gateway": "gateway.app:create_app",
    "preprocessor": "preprocessor.app:create_app",
    "triton": None,
}


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_copies_existing_files_and_runs_the_contract(service: str) -> None:
    dockerfile = REPO_ROOT / "docker" / f"{service}.Dockerfile"
    instructions = _instructions(dockerfile)
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert source.split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"
    assert any(op == "HEALTHCHECK" for op, _ in instructions)
    cmd = json.loads([args for op, args in instructions if op == "CMD"][-1])
    if DOCKERFILES[service]:
        assert cmd[:3] == ["uvicorn", "--factory", DOCKERFILES[service]]
        assert not [args for _op, args in instructions if "torch" in args]
    else:
        assert cmd[0] == "tritonserver" and "--model-repository=/models" in cmd


def test_service_images_install_no_torch_and_no_local_triton() -> None:
    lines = requirements_script.requirements(REPO_ROOT / "pyproject.toml", ["serve"], ["nvidia-pytriton"])
    names = {requirements_script.requirement_name(line) for line in lines}
    assert {"fastapi", "uvicorn", "tritonclient", "onnxruntime", "av"} <= names
    assert not names & {"torch", "nvidia-pytriton", "onnxscript"}


def test_validate_deploy_command_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "validate.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
