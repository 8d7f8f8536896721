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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import record  # noqa: E402
from servers import mlflow_server, postgres_server, stop_group  # noqa: E402

from harness.studies import load_study_spec  # noqa: E402
from harness.study import GRACE_SECONDS, HEARTBEAT_SECONDS  # noqa: E402

CORES = os.cpu_count() or 1


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


def finish(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        _, err = worker.communicate(timeout=3600)
        if worker.returncode != 0:
            raise RuntimeError(f"a worker failed:\n{err[-3000:]}")


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


def requeue_delay(storage: str, env: dict[str, str], folder: Path, name: str, survivor_busy: bool) -> dict:
    """Kill a worker in the middle of its trial; time until its trial is failed and re-queued
    (Optuna's completion time of the failed trial) and until a worker starts the retry.

    A worker notices a stale trial when it looks for work: between two of its trials when it is
    busy (`survivor_busy`: it runs a trial of its own when the victim dies), or every heartbeat
    while it waits for the study's last trials (the victim's trial is the study's only one)."""
    n_trials = 4 if survivor_busy else 1
    spec = write_spec(folder, name, n_trials=n_trials, epochs=12)
    trials_dir = Path(env["HARNESS_RUNS_DIR"]) / "trials" / name
    victim, = start_workers(spec, env, 1)
    survivor = None
    try:
        _wait_for(trials_dir / "trial-0000" / "checkpoints" / "last.pt")     # trial 0 is under way
        if survivor_busy:
            survivor, = start_workers(spec, env, 1)
            _wait_for(trials_dir / "trial-0001")                             # and trial 1 on the other
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.time()
        victim.wait()
        if not survivor_busy:
            survivor, = start_workers(spec, env, 1)
        finish([survivor])
    finally:
        for worker in (victim, survivor):
            if worker is not None:
                stop_group(worker)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    lost = trials[0]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    return {"requeued": lost.datetime_complete.timestamp() - killed,
            "restarted": retry.datetime_start.timestamp() - killed,
            "trial_seconds": statistics.median(t.user_attrs["trial_seconds"] for t in trials[1:]),
            "resumed_epochs": retry.user_attrs.get("resumed_epochs"), "states": [t.state.name for t in trials]}


def _wait_for(path: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per throughput configuration")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "artifacts").mkdir()
        with postgres_server() as databases, mlflow_server(databases["mlflow"], folder / "artifacts") as tracking:
            env = {**os.environ, "HARNESS_STORAGE": databases["optuna"], "MLFLOW_TRACKING_URI": tracking,
                   "HARNESS_RUNS_DIR": str(folder / "runs")}
            results = {count: throughput(databases["optuna"], env, folder, f"tp{count}", count, args.trials)
                       for count in (1, 2)}
            delays = {busy: requeue_delay(databases["optuna"], env, folder, f"requeue{int(busy)}", busy)
                      for busy in (False, True)}
    one, two = results[1], results[2]
    for count, r in results.items():
        lines.append(f"- `--workers {count}` ({count} x {max(1, CORES // count)} threads), smoke budget without pruning, "
                     f"PostgreSQL + MLflow server: {r['trials']} trials in {r['span']:.1f} s "
                     f"(first start to last end) = **{r['per_hour']:.0f} trials/h**; "
                     f"worker start-up {r['startup']:.1f} s, wall {r['wall']:.1f} s")
    lines.append(f"- scaling 1 -> 2 workers: x{two['per_hour'] / one['per_hour']:.2f} trials/h "
                 f"on {CORES} cores")
    for busy, delay in delays.items():
        situation = (f"while the other worker runs its own trial ({delay['trial_seconds']:.0f} s long)" if busy
                     else "while the other worker waits for the study's last trial")
        lines.append(f"- a worker killed (SIGKILL) mid-trial {situation}, heartbeat {HEARTBEAT_SECONDS} s, grace "
                     f"{GRACE_SECONDS} s: its trial failed and re-queued **{delay['requeued']:.1f} s** after the "
                     f"kill, the retry started {delay['restarted']:.1f} s after it, resuming after "
                     f"{delay['resumed_epochs']} epoch(s); trial states {', '.join(delay['states'])}")
    record("Scale-out: trials per hour with 1 and 2 workers, re-queue time of a dead worker's trial", lines)


if __name__ == "__main__":
    main()
