"""docker/k8s/, the Kubernetes stack: every manifest validates against a pinned Kubernetes version's
schemas (offline, unknown fields rejected), the kustomizations name every file, and the references
between the objects hold (the processes they describe run a study: tests/e2e/test_k8s_processes.py)."""
from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from k8s_manifests import (IMAGE, K8S, KUBERNETES_VERSION, KUSTOMIZATION_FIELDS, ROOT, base_objects, container,
                           documents, kustomization, pod_spec, workloads)

# --- the manifests, statically -------------------------------------------------------------------

MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def test_the_validator_rejects_unknown_fields():
    job = copy.deepcopy(base_objects()[("Job", "harness-worker")])
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    job["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="envv"):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_every_manifest_validates_strictly(path):
    docs = documents(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(part) for part in err.absolute_path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {err.message}")
        # one stack per namespace, whichever: `kubectl apply -k ... -n NAMESPACE` places it
        assert "namespace" not in doc["metadata"], f"{path.name}: {doc['kind']} names a namespace"


def test_the_kustomizations_name_every_manifest():
    base = kustomization(K8S)
    assert set(base) <= KUSTOMIZATION_FIELDS and base["kind"] == "Kustomization"
    assert sorted(base["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert [image["name"] for image in base["images"]] == [IMAGE]

    overlay = kustomization(K8S / "gpu")
    assert set(overlay) <= KUSTOMIZATION_FIELDS and overlay["kind"] == "Kustomization"
    assert overlay["resources"] == [".."]
    assert sorted(patch["path"] for patch in overlay["patches"]) == sorted(
        p.name for p in (K8S / "gpu").glob("*.yaml") if p.name != "kustomization.yaml")
    assert {p.parent for p in MANIFESTS} == {K8S, K8S / "gpu"}   # no folder that nothing applies


def test_the_objects_refer_to_each_other_consistently():
    objects = base_objects()
    for workload in workloads(objects):
        spec, labels = pod_spec(workload), workload["spec"]["template"]["metadata"]["labels"]
        name = workload["metadata"]["name"]
        if workload["kind"] != "Job":
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        # Service links would set MLFLOW_PORT=tcp://..., which `mlflow server` reads as its --port.
        assert spec["enableServiceLinks"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for box in spec.get("initContainers", []) + spec["containers"]:
            image = box["image"]
            assert image == IMAGE or (image == "postgres:17" and name == "postgres"), f"{name}: {image}"
            for mount in box.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | claims, f"{name}: volume {mount['name']}"
            for item in box.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in objects[("Secret", ref["name"])]["stringData"], f"{name}: {ref}"
        for volume in volumes.values():
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in objects, name
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects, name
    assert ("Service", objects[("StatefulSet", "postgres")]["spec"]["serviceName"]) in objects
    for (kind, name), service in objects.items():
        if kind != "Service":
            continue
        backing = [w for w in workloads(objects)
                   if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(backing) == 1, f"service {name} selects {len(backing)} workloads"
        ports = {p["name"]: p["containerPort"] for c in pod_spec(backing[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert ports.get(port["targetPort"]) == port["port"], f"service {name}: {port}"
    # the image's user (uid 1000) must be able to write the MLflow server's fresh volume
    assert pod_spec(objects[("Deployment", "mlflow")])["securityContext"]["fsGroup"] == 1000


def test_the_postgres_init_script_is_docker_postgres_init():
    objects = base_objects()
    scripts = {p.name: p.read_text() for p in (ROOT / "docker" / "postgres-init").iterdir()}
    assert objects[("ConfigMap", "postgres-init")]["data"] == scripts
    postgres = container(objects[("StatefulSet", "postgres")], "postgres")
    assert {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True} in postgres["volumeMounts"]
    assert "command" not in postgres     # the image's entrypoint runs the init scripts


def test_the_worker_job_survives_preemption_and_clean_stops():
    job = base_objects()[("Job", "harness-worker")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] >= 1
    # Rules the API server adds to the schema: podFailurePolicy needs restartPolicy Never and allows
    # only podReplacementPolicy Failed; onExitCodes must name a container of the pod.
    assert pod_spec(job)["restartPolicy"] == "Never" and spec["podReplacementPolicy"] == "Failed"
    assert spec["backoffLimitPerIndex"] >= 1
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert {"action": "Ignore", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [143]}} in rules
    # exit 2 is also "cannot reach the stores" (StoreUnavailable): never a FailJob rule
    assert all(2 not in rule.get("onExitCodes", {}).get("values", []) for rule in rules)
    # compose gives the worker 60 s to stop at its next training step
    assert pod_spec(job)["terminationGracePeriodSeconds"] >= 60
    worker = container(job, "worker")
    env = {item["name"]: item for item in worker["env"]}
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert "emptyDir" in volumes[mounts[env["HARNESS_RUNS_DIR"]["value"]]]   # the pods share no disk


def test_the_gpu_overlay_asks_one_gpu_per_worker_of_the_base_job():
    base, (patch,) = base_objects(), documents(K8S / "gpu" / "worker-gpu.yaml")
    assert ("Job", patch["metadata"]["name"]) in base
    job = base[(patch["kind"], patch["metadata"]["name"])]
    (worker,) = pod_spec(patch)["containers"]
    container(job, worker["name"])     # merges into an existing container, by name
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "DEVICE", "value": "cuda"} in worker["env"]
    assert {item["name"] for item in worker["env"]} <= {item["name"] for item in container(job, "worker")["env"]}
    (image,) = kustomization(K8S)["images"]
    assert worker["image"].rsplit(":", 1)[0] == image["newName"]    # the base's registry, a CUDA tag
