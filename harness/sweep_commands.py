"""The sweep commands of `harness`: sweep, studies, report, best, ui.

Optuna and MLflow are imported inside the commands: `harness train` stays quick to start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .cli_common import UsageError, echo, friendly_errors, quiet_libraries


def store_options(command: Callable) -> Callable:
    """Where the studies live: the runs directory, or an Optuna storage URL and an MLflow tracking URI."""
    options = [
        click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of the embedded stores (optuna.db, mlflow.db, mlartifacts/, trials/) "
                          "[default: $HARNESS_RUNS_DIR or ./harness-runs]."),
        click.option("--storage", default=None,
                     help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                          "[default: $HARNESS_STORAGE or sqlite in --runs-dir]."),
        click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI, e.g. http://host:5000 "
                          "[default: $MLFLOW_TRACKING_URI or sqlite in --runs-dir]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _stores(runs_dir: Path | None, storage: str | None, tracking_uri: str | None):
    from .stores import resolve_stores

    return resolve_stores(runs_dir, storage, tracking_uri)


def _study_name(study: str) -> str:
    """A study name; a spec file path or shipped spec name maps to the name inside the spec."""
    from .studies import available_studies, load_study_spec

    if study.endswith((".yaml", ".yml")) or study in available_studies():
        return load_study_spec(study).name
    return study


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
    from .studies import load_study_spec
    from .stop_signals import StopRequested, StopSignals
    from .sweep import SweepError, run_sweep

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
        from .workers import run_workers
        given = {"--n-trials": n_trials, "--timeout": timeout, "--runs-dir": runs_dir, "--storage": storage,
                 "--tracking-uri": tracking_uri, "--device": device, "--seed": seed, "--pack": pack,
                 "--checkpoint-every": checkpoint_every}
        args = ["--study", study] + [str(v) for flag, value in given.items() if value is not None
                                     for v in (flag, value)]
        sys.exit(run_workers(args, workers, echo))
    if pack is not None:
        spec = dataclasses.replace(spec, pack=pack)
    stores = _stores(runs_dir, storage, tracking_uri)
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
    if summary.best_number is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in summary.best_params.items())
        spread = f" ± {summary.best_ci95:.2f}" if summary.best_ci95 is not None else ""
        echo(f"best: trial {summary.best_number}, {summary.best_value:.2f}{spread} dB ({params})")
    where = f" --runs-dir {runs_dir}" if runs_dir else ""
    echo(f"next: harness ui{where}   |   harness report --study {spec.name} --html{where}   |   "
         f"harness best --study {spec.name} --export ckpt{where}")


@click.command()
@store_options
@friendly_errors
def studies(runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> None:
    """List the studies in the storage: trials by state and the best PSNR."""
    quiet_libraries()
    from .stores import holds_no_store, store_file
    from .study_tables import studies_table

    stores = _stores(runs_dir, storage, tracking_uri)
    if holds_no_store(stores.storage_url):   # say so; never create an empty store in a wrong folder
        echo(f"no studies: {stores.runs_dir} holds no study store (no {store_file(stores.storage_url).name}); "
             f"start one with: harness sweep --study smoke --runs-dir {stores.runs_dir}")
        return
    table = studies_table(stores)
    if table.empty:
        echo("no studies yet; start one with: harness sweep --study smoke")
        return
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


@click.command()
@click.option("--study", required=True, help="Study name (or its spec name or path).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as CSV here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as Markdown here.")
@click.option("--html", "html_report", is_flag=True,
              help="Also write the study's analysis as a self-contained folder (index.html, figures, CSVs) "
                   "and log it to the study's MLflow parent run.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the --html report [default: RUNS_DIR/reports/STUDY].")
@store_options
@friendly_errors
def report(study: str, csv_path: Path | None, markdown_path: Path | None, html_report: bool, out: Path | None,
           runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> None:
    """Print a study's trials: state, params, final and best PSNR, epochs, duration, MLflow run id.

    With --html, also the lab's analysis: schedules against losses, curves by KL-annealing type,
    PSNR per frame, optimisation history and parameter importances, the trials table, the best rollout.
    """
    quiet_libraries()
    import pandas as pd

    from .study_tables import anneal_table, load_existing_study, trials_table

    if out is not None and not html_report:
        raise UsageError("--out is the folder of the --html report: give --html too")
    stores = _stores(runs_dir, storage, tracking_uri)
    loaded = load_existing_study(stores, _study_name(study))
    if html_report and not loaded.get_trials(deepcopy=False):
        raise UsageError(f"--study {loaded.study_name}: the study has no trials yet; nothing to report")
    table = trials_table(loaded)
    by_anneal = anneal_table(loaded)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if not by_anneal.empty:
            click.echo("\nbest trial of each KL-annealing type (95% intervals over seeds; "
                       "'within noise': the interval holds 0):")
            click.echo(by_anneal.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if csv_path:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv_path, index=False)
        echo(f"wrote {csv_path}")
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
        echo(f"wrote {markdown_path}")
    if html_report:
        from .html_report import write_html_report
        from .tracking import StudyTracker

        folder = out or stores.runs_dir / "reports" / loaded.study_name
        index = write_html_report(loaded, StudyTracker(stores, loaded.study_name), folder, progress=echo)
        echo(f"wrote {index} (also logged to the study's MLflow parent run, under report/)")


@click.command()
@click.option("--study", required=True, help="Study name (or its spec name or path).")
@click.option("--export", type=click.Choice(["ckpt"]), default=None,
              help="ckpt: write the best trial's checkpoint, config YAML and metrics JSON to --out.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Export folder [default: RUNS_DIR/best/STUDY].")
@store_options
@friendly_errors
def best(study: str, export: str | None, out_dir: Path | None, runs_dir: Path | None, storage: str | None,
         tracking_uri: str | None) -> None:
    """Show the study's best completed trial; with --export ckpt, export it for `harness generate`."""
    quiet_libraries()
    import tempfile

    from .run_files import json_safe, write_config
    from .study_tables import load_existing_study
    from .study import best_trial
    from .tracking import StudyTracker, seed_prefix

    stores = _stores(runs_dir, storage, tracking_uri)
    name = _study_name(study)
    loaded = load_existing_study(stores, name)
    trial = best_trial(loaded.get_trials(deepcopy=False))
    if trial is None:
        raise UsageError(f"--study {name}: no completed trial yet, so there is no best one")
    seeds = trial.user_attrs.get("seeds") or []
    summary: dict[str, Any] = {
        "study": name, "trial": trial.number, "final_val_psnr": trial.value, "params": trial.params,
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        **{key: trial.user_attrs.get(key) for key in ("best_val_psnr", "epochs_run", "trial_seconds")},
    }
    prefix = ""
    if len(seeds) > 1:    # the trial's value is the seeds' mean; the export is its best seed's model
        summary |= {key: trial.user_attrs.get(key) for key in ("seeds", "seed_values", "value_ci95", "best_seed")}
        prefix = seed_prefix(trial.user_attrs["best_seed"], len(seeds))
    spread = f" ± {summary['value_ci95']:.2f}" if summary.get("value_ci95") is not None else ""
    echo(f"best of {name}: trial {trial.number}, {trial.value:.2f}{spread} dB, MLflow run {summary['mlflow_run_id']}"
         + (f"; exporting seed {trial.user_attrs['best_seed']} of {len(seeds)}" if prefix and export else ""))
    if export is None:
        click.echo(json.dumps(json_safe(summary), indent=2))
        return
    from models.checkpoint import atomic_copy, config_from_checkpoint, load_checkpoint   # torch: only to export

    out_dir = out_dir or stores.runs_dir / "best" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = StudyTracker(stores, name)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        downloaded = tracker.download_checkpoint(summary["mlflow_run_id"], Path(tmp), prefix)
        state = load_checkpoint(downloaded)           # checks it before replacing an earlier export
        config = config_from_checkpoint(state, downloaded)
        atomic_copy(downloaded, out_dir / "checkpoint.pt")
    write_config(config.to_dict(), out_dir / "config.yaml")
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    echo(f"exported to {out_dir}: checkpoint.pt, config.yaml, metrics.json")
    echo(f"next: harness generate --ckpt {out_dir / 'checkpoint.pt'} --out {out_dir / 'generated'}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", default=5000, show_default=True, help="Port of the UI.")
@store_options
@friendly_errors
def ui(host: str, port: int, runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the runs directory's tracking store and print its URL (Ctrl-C stops it)."""
    stores = _stores(runs_dir, storage, tracking_uri)
    if stores.tracking_uri.startswith(("http://", "https://")):
        echo(f"the tracking server serves its own UI: {stores.tracking_uri}")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.tracking_uri,
               "--host", host, "--port", str(port)]
    if stores.artifact_location:
        command += ["--default-artifact-root", stores.artifact_location]
    echo(f"MLflow UI: http://{host}:{port}  (store {stores.tracking_uri}; Ctrl-C stops it)")
    sys.exit(_serve_until_stopped(command))


def _serve_until_stopped(command: list[str]) -> int:
    """Run the MLflow UI in its own process group and stop that whole group (the UI starts uvicorn
    and job workers of its own) on Ctrl-C or SIGTERM, so no server outlives `harness ui`."""
    process = subprocess.Popen(command, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)   # whatever the UI's own children left running
        process.wait()
        return 0
