"""A small, documented subset of kustomize, to build deploy/k8s/ offline (no kubectl/kustomize here).

WHY: CI must build every overlay and validate the result against the Kubernetes schemas, but neither
kubectl nor kustomize is installable from the registries this project may use, and no Python package
implements kustomize. So this module renders exactly the kustomization fields the manifests use and
REFUSES every other field, so a manifest can never rely on something that is silently ignored here.
`kubectl kustomize deploy/k8s/overlays/<name>` remains the reference renderer; where both are available
their outputs should match object for object.

Supported kustomization.yaml fields (kustomize semantics, applied in this order):
- ``resources``: files (multi-document YAML) or directories holding a kustomization.yaml.
- ``patches``: entries with ``path`` only; each document in the file is a strategic-merge patch whose
  apiVersion/kind/metadata.name pick the target (an error if none matches). Maps merge recursively;
  a ``null`` value deletes the key; lists merge by the Kubernetes merge key for the lists listed in
  MERGE_KEYS (containers, env and volumes by name, volumeMounts by mountPath, container ports by
  containerPort, Service ports by port) and are replaced otherwise; ``$patch: delete`` on a list item
  removes that item and on a whole patch document removes the target resource.
- ``namespace``: sets metadata.namespace on every namespaced object.
- ``labels``: entries with ``pairs`` and optional ``includeTemplates`` (pod template labels too);
  ``includeSelectors: true`` is refused (it would rewrite selectors).
- ``images``: entries with ``name`` and any of ``newName``, ``newTag``, ``digest``; they apply to
  every container and initContainer image whose name (without tag/digest) equals ``name``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
# Strategic-merge keys of the Kubernetes lists we patch; any other list is replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "APIService",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class KustomizeError(ValueError):
    """The kustomization cannot be built; the message names the file and what to fix."""


def load_documents(path: Path) -> list[Obj]:
    """All non-empty YAML documents of a file, each required to be a Kubernetes-style object."""
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{path}: cannot read YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "name" not in doc.get("metadata", {}):
            raise KustomizeError(f"{path}: every document needs kind and metadata.name")
    return docs


def object_id(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion", ""), obj["kind"], meta.get("namespace", ""), meta["name"])


def build(directory: Path) -> list[Obj]:
    """Render the kustomization in `directory` into a list of objects (in resource order)."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(
            f"{kfile}: unsupported field(s) {sorted(unknown)}; "
            f"kustomize_lite supports {sorted(SUPPORTED_FIELDS)}"
        )
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += load_documents(target)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        if object_id(obj) in seen:
            raise KustomizeError(f"{kfile}: duplicate resource {object_id(obj)}")
        seen.add(object_id(obj))
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeError(f"{kfile}: patches entries support only 'path', got {sorted(entry)}")
        for patch in load_documents(directory / entry["path"]):
            objects = apply_patch(objects, patch, directory / entry["path"])
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        apply_labels(objects, entry, kfile)
    for entry in spec.get("images", []):
        apply_image(objects, entry, kfile)
    return objects


def apply_patch(objects: list[Obj], patch: Obj, source: Path) -> list[Obj]:
    """Strategic-merge `patch` into the one object with the same apiVersion, kind and name."""
    matches = [
        i
        for i, obj in enumerate(objects)
        if obj["kind"] == patch["kind"]
        and obj.get("apiVersion") == patch.get("apiVersion")
        and obj["metadata"]["name"] == patch["metadata"]["name"]
    ]
    if len(matches) != 1:
        raise KustomizeError(
            f"{source}: patch for {patch['kind']}/{patch['metadata']['name']} "
            f"matches {len(matches)} resources, expected 1"
        )
    index = matches[0]
    if patch.get("$patch") == "delete":
        return objects[:index] + objects[index + 1 :]
    merged = merge(objects[index], patch)
    return objects[:index] + [merged] + objects[index + 1 :]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of `patch` onto `base` (see the module docstring for the rules)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return strip_directives(patch)
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key == "$patch":
                continue
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = strip_directives(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = list_merge_key(field, base + patch)
        if key is None:
            return strip_directives(patch)
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"list {field!r} merges by {key!r}, but a patch item lacks it: {item}")
            position = next((i for i, old in enumerate(out) if old.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if position is None:
                    raise KustomizeError(f"cannot delete {field}[{key}={item[key]}]: no such item")
                del out[position]
            elif position is None:
                out.append(strip_directives(item))
            else:
                out[position] = merge(out[position], item, field)
        return out
    return strip_directives(patch)


def list_merge_key(field: str, items: list[Any]) -> str | None:
    """The merge key of a list field, or None when the list is replaced whole."""
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if field == "ports":  # container ports merge by containerPort, Service ports by port
        return "containerPort" if all("containerPort" in item for item in items) else "port"
    return MERGE_KEYS.get(field)


def strip_directives(value: Any) -> Any:
    """A deep copy without `$patch` directives (they never reach the rendered output)."""
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [strip_directives(v) for v in value]
    return copy.deepcopy(value)


def apply_labels(objects: list[Obj], entry: Obj, kfile: Path) -> None:
    unknown = set(entry) - {"pairs", "includeTemplates", "includeSelectors"}
    if unknown or entry.get("includeSelectors"):
        raise KustomizeError(
            f"{kfile}: labels supports pairs and includeTemplates only (got {sorted(entry)})"
        )
    pairs = {str(k): str(v) for k, v in entry["pairs"].items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and obj["kind"] in POD_TEMPLATE_KINDS:
            obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def image_name(image: str) -> str:
    """The image reference without its tag or digest ("reg:5000/a/b:1.0" -> "reg:5000/a/b")."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0]


def apply_image(objects: list[Obj], entry: Obj, kfile: Path) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown or "name" not in entry:
        raise KustomizeError(
            f"{kfile}: images entries take name, newName, newTag, digest (got {sorted(entry)})"
        )
    for obj in objects:
        if obj["kind"] not in POD_TEMPLATE_KINDS:
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            current = container["image"]
            if image_name(current) != entry["name"]:
                continue
            name = entry.get("newName", entry["name"])
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
            elif "newTag" in entry:
                container["image"] = f"{name}:{entry['newTag']}"
            else:
                container["image"] = name + current[len(image_name(current)) :]
