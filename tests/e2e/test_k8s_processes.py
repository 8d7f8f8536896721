"""docker/k8s/, the Kubernetes stack, run: Kubernetes does not run here, so this test starts the processes
the manifests describe directly: PostgreSQL, the MLflow server from its container's command, and two
workers as two pods of the indexed Job would run them, on a tiny study that they finish together."""
from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from k8s_manifests import ROOT, base_objects, container, pod_spec
from servers import free_port, postgres_server, stop_group
from sweep_helpers import write_spec


# --- the same processes, started directly ---------------------------------------------------------

def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' variable references in env values, command and args: $(NAME) becomes NAME's value
    where NAME is defined (else stays), and $$ stands for $."""
    def one(match: re.Match) -> str:
        return "$" if match.group(0) == "$$" else env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def image_env() -> dict[str, str]:
    """The ENV of docker/Dockerfile, as every container of the image starts with it."""
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(word.split("=", 1) for word in shlex.split(line[4:]))
    return env


class Localizer:
    """Maps the cluster's names onto this machine: service addresses onto 127.0.0.1 and the local
    servers' ports, a container's mount paths onto its pod's folders."""

    def __init__(self, services: dict[str, int]):
        self.services = services            # "host:port" in the cluster -> port on 127.0.0.1

    def __call__(self, text: str, mounts: dict[str, Path]) -> str:
        for address, port in self.services.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(address)}(?!\d)", f"127.0.0.1:{port}", text)
        for mount_path, folder in mounts.items():
            if text == mount_path or text.startswith(mount_path + "/"):
                text = str(folder) + text[len(mount_path):]
        return text


def process_env(box: dict, objects: dict, localize: Localizer, mounts: dict[str, Path], home: Path,
                values: dict[str, str] | None = None, downward: dict[str, str] | None = None) -> dict[str, str]:
    """A container's environment as the kubelet builds it, localized. `values` replaces given env
    items' values; `downward` gives the resourceFieldRef values. HOME: the pod's folder."""
    env = {**image_env(), "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
    values = dict(values or {})
    for item in box.get("env", []):
        name = item["name"]
        if name in values:
            value = values.pop(name)
        elif "value" in item:
            value = expand(item["value"], env)
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            value = objects[("Secret", ref["name"])]["stringData"][ref["key"]]
        else:
            value = (downward or {})[item["valueFrom"]["resourceFieldRef"]["resource"]]
        env[name] = value
    assert not values, f"the manifest's container {box['name']} has no env {sorted(values)}"
    return {name: localize(value, mounts) for name, value in env.items()}


def pod_folders(box: dict, folder: Path) -> dict[str, Path]:
    """A folder of the pod's for each volume the container mounts, by mount path."""
    mounts = {m["mountPath"]: folder / m["name"] for m in box.get("volumeMounts", [])}
    for path in mounts.values():
        path.mkdir(parents=True)
    return mounts


def process_argv(box: dict, env: dict[str, str], localize: Localizer, mounts: dict[str, Path]) -> list[str]:
    assert "command" in box, f"{box['name']}: the harness image's default command is only `harness --help`"
    return [localize(expand(word, env), mounts) for word in box["command"] + box.get("args", [])]


def set_option(argv: list[str], option: str, value: str) -> list[str]:
    at = argv.index(option)
    return argv[:at + 1] + [value] + argv[at + 2:]


class Pods:
    """Processes started like containers of pods: each in its own session, its output in a log file,
    stopped with everything it started when the test ends, also when it fails."""

    def __init__(self, stack: contextlib.ExitStack, folder: Path):
        self.stack, self.folder, self.sessions = stack, folder, []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.stack.enter_context(open(self.folder / f"{name}.log", "w"))
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=self.folder, start_new_session=True)
        self.sessions.append(process.pid)
        self.stack.callback(stop_group, process)
        return process

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 300) -> None:
        """An init container: runs to its end before the pod's container starts."""
        process = self.start(name, argv, env)
        assert process.wait(timeout=timeout) == 0, self.log(name)

    def log(self, name: str) -> str:
        return f"{name}:\n" + (self.folder / f"{name}.log").read_text()[-3000:]


def wait_for_http(url: str, process: subprocess.Popen, pods: Pods, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, pods.log(name)
            time.sleep(0.5)


def http_status(url: str, host: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def left_running(sessions: list[int], postgres_port: int) -> list[str]:
    """Live processes of the given sessions, and a PostgreSQL server on the port (zombies are dead:
    only their exit status waits to be collected)."""
    table = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 3) for line in table.splitlines()]
    return [" ".join(row) for row in rows if len(row) == 4 and not row[2].startswith("Z")
            and (int(row[1]) in sessions or f"-p {postgres_port} " in row[3])]


@pytest.mark.slow
def test_the_manifests_processes_run_a_study_together(tiny_data_root, tmp_path):
    objects = base_objects()
    mlflow_pod, job = objects[("Deployment", "mlflow")], objects[("Job", "harness-worker")]
    spec = write_spec(tmp_path / "k8s_pods.yaml", tiny_data_root, n_trials=2, pruner={"type": "none"})
    pods_count = 2

    with contextlib.ExitStack() as stack:
        databases = stack.enter_context(postgres_server())      # optuna and mlflow, as the init script makes
        postgres_port = urlsplit(databases["optuna"]).port
        pods = Pods(stack, tmp_path)
        mlflow_port = free_port()
        localize = Localizer({f"{name}:{service['spec']['ports'][0]['port']}": port
                              for name, port in (("postgres", postgres_port), ("mlflow", mlflow_port))
                              for service in [objects[("Service", name)]]})

        # The MLflow pod: its init container, then the server from the manifest's command, with the
        # artifacts volume in a folder and the loopback address instead of 0.0.0.0.
        server = container(mlflow_pod, "mlflow")
        folder = tmp_path / "mlflow-pod"
        mounts = pod_folders(server, folder)
        artifacts = mounts["/mlartifacts"]
        for box in pod_spec(mlflow_pod)["initContainers"]:
            env = process_env(box, objects, localize, {}, folder)
            pods.run(f"mlflow-{box['name']}", process_argv(box, env, localize, {}), env)
        env = process_env(server, objects, localize, mounts, folder)
        argv = process_argv(server, env, localize, mounts)
        assert argv[argv.index("--backend-store-uri") + 1].endswith(f"127.0.0.1:{postgres_port}/mlflow")
        assert argv[argv.index("--artifacts-destination") + 1] == str(artifacts)
        argv = set_option(set_option(argv, "--host", "127.0.0.1"), "--port", str(mlflow_port))
        mlflow = pods.start("mlflow", argv, env)
        # Ready as its readiness probe sees it: the Service sends the workers there only then.
        probe = server["readinessProbe"]["httpGet"]["path"]
        wait_for_http(f"http://127.0.0.1:{mlflow_port}{probe}", mlflow, pods, "mlflow")

        # Two pods of the indexed Job: each its init container, then the worker with the manifest's
        # command and environment, its own emptyDir folders, and the tiny study.
        worker = container(job, "worker")
        workers = []
        for index in range(pods_count):
            folder = tmp_path / f"worker-{index}"
            mounts = pod_folders(worker, folder)
            for box in pod_spec(job)["initContainers"]:
                env = process_env(box, objects, localize, mounts, folder)
                pods.run(f"worker-{index}-{box['name']}", process_argv(box, env, localize, mounts), env)
            # two pods on the 2 cores of CI: one thread each (the manifest: its requests.cpu)
            env = process_env(worker, objects, localize, mounts, folder, values={"STUDY": str(spec)},
                              downward={"requests.cpu": "1"})
            env["JOB_COMPLETION_INDEX"] = str(index)       # the Job controller sets it in every pod
            assert env["HARNESS_STORAGE"].endswith(f"127.0.0.1:{postgres_port}/optuna")
            assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
            assert env["HARNESS_RUNS_DIR"] == str(folder / "runs")
            workers.append(pods.start(f"worker-{index}", process_argv(worker, env, localize, mounts), env))
        for index, process in enumerate(workers):
            assert process.wait(timeout=900) == 0, pods.log(f"worker-{index}")

        # The study is finished: every trial complete in Optuna, one finished MLflow run each.
        name = yaml.safe_load(spec.read_text())["name"]
        trials = optuna.load_study(study_name=name, storage=databases["optuna"]).get_trials()
        logs = "\n".join(pods.log(f"worker-{i}") for i in range(pods_count))
        # workers counting at the same moment may each start one more
        assert 2 <= len(trials) <= 1 + pods_count and all(t.state == TrialState.COMPLETE for t in trials), logs
        ran = [int(re.search(r"this worker ran (\d+)", pods.log(f"worker-{i}")).group(1)) for i in range(pods_count)]
        assert sum(ran) == len(trials), logs
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        experiment = client.get_experiment_by_name(name)
        runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("harness.role") == "trial"}
        assert sorted(runs) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
        for run in runs.values():
            assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
            assert any((artifacts / run.info.experiment_id / run.info.run_id / "artifacts").rglob("*.pt"))
        for index in range(pods_count):     # the workers wrote no artifact store of their own
            assert not (tmp_path / f"worker-{index}" / "runs" / "mlartifacts").exists()

        # The server answers the Host header the pods send (the service name) and a cluster's full
        # name, and refuses others: its --allowed-hosts is in force.
        service_host = urlsplit({item["name"]: item for item in worker["env"]}["MLFLOW_TRACKING_URI"]["value"]).netloc
        assert service_host == "mlflow:5000"
        api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        assert http_status(api, service_host) == 200
        assert http_status(api, "mlflow.harness.svc.cluster.local:5000") == 200
        assert http_status(api, "mlflow.example.com:5000") == 403
        sessions = pods.sessions
    assert not left_running(sessions, postgres_port)
