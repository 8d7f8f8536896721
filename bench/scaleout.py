"""Scale-out figures: trials per hour with `harness sweep --workers 1` and `2`, and how long a dead worker's trial
waits before it is queued again and taken up.

    python bench/scaleout.py                # smoke budget, 8 trials per configuration

Starts the topology the tests use (tests/servers.py): a PostgreSQL server in a temporary folder
and an MLflow server on it, on 127.0.0.1; workers are `harness sweep` processes. The smoke spec
runs without pruning here, so that every trial costs the same in every configuration.
Throughput counts from the first trial's start to the last trial's end (Optuna's timestamps),
which leaves out the workers' one-off start (imports, store connections, data loading), given
separately.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import record  # noqa: E402
from servers import mlflow_server, postgres_server, stop_group  # noqa: E402

from harness.spec import load_study_spec  # noqa: E402
from harness.store.tracking import CHECKPOINT_ARTIFACT, CHECKPOINT_FOLDER  # noqa: E402
from models.cvae import VideoCVAE  # noqa: E402
from harness.store.optuna_storage import GRACE_SECONDS, HEARTBEAT_SECONDS  # noqa: E402

CORES = os.cpu_count() or 1
SCENARIOS = [(signal.SIGKILL, True, False), (signal.SIGKILL, True, True), (signal.SIGKILL, False, False),
             (signal.SIGTERM, True, False), (signal.SIGTERM, False, False)]
# study dims (F, L, N, D): the smoke study's and the lab's full model (kl_schedules)
UPLOAD_DIMS = {"smoke": (16, 8, 4, 16), "full (kl_schedules)": (128, 32, 12, 192)}
HEIGHT, WIDTH = 32, 64


def write_spec(folder: Path, name: str, n_trials: int, epochs: int | None = None) -> Path:
    spec = yaml.safe_load(load_study_spec("smoke").path.read_text())
    spec.update(name=name, n_trials=n_trials, pruner={"type": "none"})
    if epochs is not None:
        spec["budget"]["epochs"] = epochs
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def start_workers(spec: Path, env: dict[str, str], count: int) -> list[subprocess.Popen]:
    # The machine's cores split between the workers, as a user would set them.
    env = {**env, "OMP_NUM_THREADS": str(max(1, CORES // count))}
    return [subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--device", "cpu"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True) for _ in range(count)]


def finish(workers: list[subprocess.Popen], allowed: tuple[int, ...] = (0,)) -> list[str]:
    """Wait for the workers to end; their stderr texts."""
    errors = []
    for worker in workers:
        _, err = worker.communicate(timeout=3600)
        if worker.returncode not in allowed:
            raise RuntimeError(f"a worker failed ({worker.returncode}):\n{err[-3000:]}")
        errors.append(err)
    return errors


def throughput(storage: str, env: dict[str, str], folder: Path, name: str, count: int, n_trials: int) -> dict:
    """`harness sweep --workers count`: the command a user runs, which splits the cores itself."""
    spec = write_spec(folder, name, n_trials)
    start = time.time()
    finish([subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--device", "cpu",
                              "--workers", str(count)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)])
    wall = time.time() - start
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    first = min(t.datetime_start for t in trials).timestamp()
    last = max(t.datetime_complete for t in trials).timestamp()
    return {"trials": len(trials), "wall": wall, "span": last - first, "startup": first - start,
            "per_hour": 3600 * len(trials) / (last - first)}


def requeue_delay(storage: str, env: dict[str, str], folder: Path, name: str, stop: signal.Signals,
                  shared_folder: bool, survivor_busy: bool) -> dict:
    """Stop a worker in the middle of its trial (SIGKILL: it dies; SIGTERM: it stops cleanly); time
    until its trial is failed and re-queued (Optuna's completion time of the failed trial) and until
    the other worker starts the retry, and say where the retry found its checkpoint.

    The other worker is running when the victim stops: either waiting for the study's last trial (the
    victim's is the study's only one), so that it looks for stale or queued trials every heartbeat, or
    busy with a trial of its own (`survivor_busy`), so that it looks between two trials. With
    `shared_folder` both use one runs folder (the retry reads the newest local checkpoint); without,
    each has its own and the retry downloads the checkpoint from the lost attempt's MLflow run."""
    n_trials = 4 if survivor_busy else 1
    spec = write_spec(folder, name, n_trials=n_trials, epochs=12)
    trials_dir = Path(env["HARNESS_RUNS_DIR"]) / "trials" / name
    survivor_env = env if shared_folder else {**env, "HARNESS_RUNS_DIR": str(folder / f"{name}-survivor-runs")}
    victim, = start_workers(spec, env, 1)
    survivor = None
    try:
        _wait_for(trials_dir / "trial-0000" / "checkpoints" / "last.pt")     # trial 0 is under way
        survivor, = start_workers(spec, survivor_env, 1)
        if survivor_busy:
            _wait_for(Path(survivor_env["HARNESS_RUNS_DIR"]) / "trials" / name / "trial-0001")
        else:
            _wait_for_state(storage, name, lambda trials: len(trials[0].intermediate_values) >= 2)
            time.sleep(3)                                   # the survivor is waiting for trial 0 by now
        os.killpg(victim.pid, stop)
        stopped = time.time()
        victim.wait()
        survivor_err, = finish([survivor])
    finally:
        for worker in (victim, survivor):
            if worker is not None:
                stop_group(worker)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    lost = trials[0]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    source = ("the lost attempt's MLflow run" if "from its MLflow run" in survivor_err
              else "the shared runs folder" if "resuming trial" in survivor_err else "nowhere (epoch 0)")
    return {"requeued": lost.datetime_complete.timestamp() - stopped,
            "restarted": retry.datetime_start.timestamp() - stopped,
            "victim_status": victim.returncode, "source": source,
            "trial_seconds": statistics.median(t.user_attrs["trial_seconds"] for t in trials[1:]),
            "resumed_epochs": retry.user_attrs.get("resumed_epochs"), "states": [t.state.name for t in trials]}


def _wait_for_state(storage: str, name: str, condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition(optuna.load_study(study_name=name, storage=storage).get_trials()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"study {name} did not reach the state waited for")
        time.sleep(0.2)


def checkpoint_upload(tracking: str, folder: Path, dims: tuple[int, int, int, int], repeats: int = 5) -> dict:
    """The per-epoch upload at the given model dims: a checkpoint of the model and its Adam state
    (after one step, so the state is full), logged to a run through the MLflow server over HTTP, as
    MlflowTrialLogger does; the median of `repeats` uploads."""
    torch.manual_seed(0)
    model = VideoCVAE(*dims)
    optimizer = torch.optim.Adam(model.parameters())
    frames, poses = torch.rand(1, 2, 3, HEIGHT, WIDTH), torch.rand(1, 2, 3, HEIGHT, WIDTH)
    pred, kl = model.reconstruct(frames, poses, True, torch.Generator().manual_seed(0), 1)
    ((pred - frames[:, 1:]).pow(2).mean() + kl.mean()).backward()
    optimizer.step()
    path = folder / f"upload-{dims[3]}" / CHECKPOINT_ARTIFACT.rsplit("/", 1)[-1]
    path.parent.mkdir()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    client = MlflowClient(tracking_uri=tracking)
    run = client.create_run(client.create_experiment(f"upload-{dims[3]}"))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        client.log_artifact(run.info.run_id, str(path), CHECKPOINT_FOLDER)
        seconds.append(time.perf_counter() - start)
    client.set_terminated(run.info.run_id)
    return {"megabytes": path.stat().st_size / 1e6, "seconds": statistics.median(seconds),
            "parameters": sum(p.numel() for p in model.parameters())}


def _wait_for(path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per throughput configuration")
    parser.add_argument("--parts", default="throughput,requeue,upload",
                        help="which figures: throughput (needs quiet cores), requeue, upload")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "artifacts").mkdir()
        with postgres_server() as databases, mlflow_server(databases["mlflow"], folder / "artifacts") as tracking:
            env = {**os.environ, "HARNESS_STORAGE": databases["optuna"], "MLFLOW_TRACKING_URI": tracking,
                   "HARNESS_RUNS_DIR": str(folder / "runs")}
            results = {count: throughput(databases["optuna"], env, folder, f"tp{count}", count, args.trials)
                       for count in (1, 2)} if "throughput" in parts else {}
            delays = [(stop, shared, busy, requeue_delay(databases["optuna"], env, folder,
                                                         f"requeue{i}", stop, shared, busy))
                      for i, (stop, shared, busy) in enumerate(SCENARIOS)] if "requeue" in parts else []
            uploads = {name: checkpoint_upload(tracking, folder, dims)
                       for name, dims in UPLOAD_DIMS.items()} if "upload" in parts else {}
    for count, r in results.items():
        lines.append(f"- `--workers {count}` ({count} x {max(1, CORES // count)} threads), smoke budget without pruning, "
                     f"PostgreSQL + MLflow server: {r['trials']} trials in {r['span']:.1f} s "
                     f"(first start to last end) = **{r['per_hour']:.0f} trials/h**; "
                     f"worker start-up {r['startup']:.1f} s, wall {r['wall']:.1f} s")
    if results:
        lines.append(f"- scaling 1 -> 2 workers: x{results[2]['per_hour'] / results[1]['per_hour']:.2f} trials/h "
                     f"on {CORES} cores")
    for stop, shared, busy, delay in delays:
        situation = (f"while the other worker runs its own trial ({delay['trial_seconds']:.0f} s long)" if busy
                     else "while the other worker waits for the study's last trial")
        how = "killed (SIGKILL)" if stop == signal.SIGKILL else "stopped by SIGTERM"
        lines.append(f"- a worker {how} mid-trial {situation}, {'one shared runs folder' if shared else 'no shared folder'}, "
                     f"heartbeat {HEARTBEAT_SECONDS} s, grace {GRACE_SECONDS} s: its trial failed and re-queued "
                     f"**{delay['requeued']:.1f} s** after the signal (the worker exited {delay['victim_status']}), "
                     f"the retry started **{delay['restarted']:.1f} s** after it, resuming after "
                     f"{delay['resumed_epochs']} epoch(s) from {delay['source']}; trial states {', '.join(delay['states'])}")
    for name, upload in uploads.items():
        lines.append(f"- checkpoint upload through the MLflow server (HTTP, proxied artifacts) at the {name} dims "
                     f"({upload['parameters'] / 1e6:.2f} M parameters, model + Adam state {upload['megabytes']:.1f} MB): "
                     f"**{upload['seconds']:.2f} s** per upload (median of 5); 1% of an epoch for epochs of "
                     f"{upload['seconds'] * 100:.0f} s or more")
    titles = {"throughput": "trials per hour with 1 and 2 workers", "requeue": "a stopped worker's trial running again",
              "upload": "checkpoint upload cost"}
    record("Scale-out: " + "; ".join(title for part, title in titles.items() if part in parts), lines)


if __name__ == "__main__":
    main()
