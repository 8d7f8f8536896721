"""The Kubernetes stack's files (docker/k8s/), read as the tests need them: documents, kustomizations,
the objects by (kind, name), their pods and containers."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "docker" / "k8s"
# The version the manifests are written for: every field they use is GA there.
KUBERNETES_VERSION = "1.33"
# The name the manifests give the image docker/Dockerfile builds (kustomization.yaml rewrites it).
IMAGE = "harness"
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches", "images", "namespace", "labels"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def base_objects() -> dict[tuple[str, str], dict]:
    """The objects of the files docker/k8s/kustomization.yaml lists, by (kind, name)."""
    objects = {}
    for name in kustomization(K8S)["resources"]:
        for doc in documents(K8S / name):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str, init: bool = False) -> dict:
    containers = pod_spec(workload)["initContainers" if init else "containers"]
    return next(c for c in containers if c["name"] == name)


def workloads(objects: dict) -> list[dict]:
    return [doc for (kind, _), doc in objects.items() if kind in ("Deployment", "StatefulSet", "Job")]
