"""`harness sweep`: run a study's trials in this process, or in N local worker processes."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from .common import UsageError, echo, friendly_errors, quiet_libraries, store_options, stores_from_options


@click.command()
@click.option("--study", required=True,
              help="A spec in studies/ by name (smoke, kl_schedules, teacher_forcing, loss_weighting, full) "
                   "or the path of a spec YAML.")
@click.option("--n-trials", type=int, default=None,
              help="Target number of trials in the study, all workers together [default: the spec's n_trials]. "
                   "Running the command again continues the study up to this number; raise it to extend.")
@click.option("--timeout", type=float, default=None,
              help="Start no new trial after this many seconds [default: the spec's timeout, or none].")
@store_options
@click.option("--device", default="auto", show_default=True, help="Torch device of the trials: auto, cpu, cuda, ...")
@click.option("--seed", type=int, default=None,
              help="Seed of the sampler and of every trial's training [default: the spec's].")
@click.option("--pack", type=int, default=None,
              help="Train up to this many models as one batched model: a trial's seeds, and several trials "
                   "at once (pack // seeds of them) [default: the spec's pack, else 1]. Slower on a CPU "
                   "(BENCHMARKS.md, Packing); meant for GPUs.")
@click.option("--checkpoint-every", type=int, default=1, show_default=True,
              help="Upload each trial's checkpoint to its MLflow run after every this many epochs (0: only when "
                   "it ends), so that a retry on a worker that shares no runs folder resumes from it.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes on this machine, sharing its cores (threads per worker = cores / N); "
                   "their output is merged, and Ctrl-C or SIGTERM stops them all.")
@friendly_errors
def sweep(study: str, n_trials: int | None, timeout: float | None, runs_dir: Path | None, storage: str | None,
          tracking_uri: str | None, device: str, seed: int | None, pack: int | None, checkpoint_every: int,
          workers: int) -> None:
    """Run an Optuna study whose trials train the CVAE and log to MLflow (one nested run per trial).

    Several processes given the same study and storage share the work.
    """
    quiet_libraries()
    from harness.spec import load_study_spec
    from harness.worker.signals import StopRequested, StopSignals
    from harness.errors import SweepError
    from harness.worker.sweep import run_sweep

    if n_trials is not None and n_trials < 1:
        raise UsageError(f"--n-trials must be >= 1, got {n_trials}")
    if pack is not None and pack < 1:
        raise UsageError(f"--pack must be >= 1, got {pack}")
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    spec = load_study_spec(study)
    if workers > 1:
        from harness.worker.processes import run_workers
        given = {"--n-trials": n_trials, "--timeout": timeout, "--runs-dir": runs_dir, "--storage": storage,
                 "--tracking-uri": tracking_uri, "--device": device, "--seed": seed, "--pack": pack,
                 "--checkpoint-every": checkpoint_every}
        args = ["--study", study] + [str(v) for flag, value in given.items() if value is not None
                                     for v in (flag, value)]
        sys.exit(run_workers(args, workers, echo))
    if pack is not None:
        spec = dataclasses.replace(spec, pack=pack)
    stores = stores_from_options(runs_dir, storage, tracking_uri)
    try:
        with StopSignals() as stop:
            summary = run_sweep(spec, stores, n_trials=n_trials, timeout=timeout, device=device, seed=seed,
                                echo=echo, stop=stop, checkpoint_every=checkpoint_every)
    except SweepError as err:
        echo(f"error: {err}")
        sys.exit(1)
    except (KeyboardInterrupt, StopRequested) as err:
        reason = str(err) if isinstance(err, StopRequested) else "interrupted"
        echo(f"\n{reason}: the running trial is recorded as failed and queued again; run the same "
             f"command to continue study {spec.name}")
        sys.exit(err.exit_status if isinstance(err, StopRequested) else 130)
    states = ", ".join(f"{count} {state.lower()}" for state, count in summary.states.items() if count)
    echo(f"study {summary.study_name}: {summary.counted}/{summary.target} trials ({states}); "
         f"this worker ran {summary.ran}")
    best = summary.best
    if best is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        spread = best.user_attrs.get("value_ci95")
        echo(f"best: trial {best.number}, {best.value:.2f}{f' ± {spread:.2f}' if spread is not None else ''} dB "
             f"({params})")
    where = f" --runs-dir {runs_dir}" if runs_dir else ""
    echo(f"next: harness ui{where}   |   harness report --study {spec.name} --html{where}   |   "
         f"harness best --study {spec.name} --export ckpt{where}")
