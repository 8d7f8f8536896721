"""`harness sweep`: run a study's trials in this process, or in N local worker processes; then, when
the spec has a confirm section, its confirmation (`harness confirm`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from harness.errors import UsageError

from .common import (as_local_workers, check_worker_options, echo, friendly_errors, quiet_libraries, run_worker,
                     store_options, study_spec, worker_options, worker_stores)
from .confirm import print_ranking


@click.command()
@click.option("--study", required=True,
              help="A spec in studies/ by name (smoke, kl_schedules, teacher_forcing, loss_weighting, full) "
                   "or the path of a spec YAML.")
@click.option("--n-trials", type=int, default=None,
              help="Target number of trials in the study, all workers together [default: the spec's n_trials]. "
                   "Running the command again continues the study up to this number; raise it to extend.")
@click.option("--timeout", type=float, default=None,
              help="Start no new trial after this many seconds [default: the spec's timeout, or none].")
@click.option("--confirm/--no-confirm", default=True, show_default=True,
              help="When the search ends, confirm its best configurations on fresh seeds (the spec's confirm "
                   "section; none: nothing to do).")
@store_options
@worker_options
@friendly_errors
def sweep(study: str, n_trials: int | None, timeout: float | None, confirm: bool, runs_dir: Path | None,
          storage: str | None, tracking_uri: str | None, device: str, seed: int | None, pack: int | None,
          checkpoint_every: int, workers: int) -> None:
    """Run an Optuna study whose trials train the CVAE and log to MLflow (one nested run per trial).

    Several processes given the same study and storage share the work.
    """
    quiet_libraries()
    from harness.worker.sweep import WorkerOptions, run_confirmation, run_sweep

    if n_trials is not None and n_trials < 1:
        raise UsageError(f"--n-trials must be >= 1, got {n_trials}")
    if timeout is not None and not 0 < timeout < float("inf"):
        raise UsageError(f"--timeout must be a number of seconds > 0, got {timeout:g}")
    check_worker_options(pack, checkpoint_every, workers, device)
    spec = study_spec(study)
    stores = worker_stores(runs_dir, storage, tracking_uri)
    if workers > 1:
        as_local_workers("sweep", workers, {
            "--study": study, "--n-trials": n_trials, "--timeout": timeout, "--no-confirm": not confirm,
            "--device": device, "--seed": seed, "--pack": pack, "--checkpoint-every": checkpoint_every}, stores)
    if pack is not None:
        spec = dataclasses.replace(spec, pack=pack)

    def work(stop: object) -> None:
        options = WorkerOptions(device=device, seed=seed, echo=echo, stop=stop, checkpoint_every=checkpoint_every)
        summary = run_sweep(spec, stores, options, n_trials=n_trials, timeout=timeout)
        states = ", ".join(f"{count} {state.lower()}" for state, count in summary.states.items() if count)
        echo(f"study {summary.study_name}: {summary.counted}/{summary.target} trials ({states}); "
             f"this worker ran {summary.ran}")
        best = summary.best
        if best is not None:
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
            spread = best.user_attrs.get("value_ci95")
            echo(f"best of the search: trial {best.number}, "
                 f"{best.value:.2f}{f' ± {spread:.2f}' if spread is not None else ''} dB ({params})")
        if confirm and spec.confirm is not None and summary.counted >= summary.target:
            print_ranking(run_confirmation(spec, stores, options))

    run_worker(spec.name, work)
    where = f" --runs-dir {runs_dir}" if runs_dir else ""
    echo(f"next: harness ui{where}   |   harness report --study {spec.name} --html{where}   |   "
         f"harness best --study {spec.name} --export ckpt{where}")
