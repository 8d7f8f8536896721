"""What the studies found: `harness studies`, `harness report`, `harness best` (read the stores only)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness.errors import UsageError

from .checks import file_to_write, folder_to_write
from .common import echo, friendly_errors, quiet_libraries, store_options, stores_from_options, study_name

if TYPE_CHECKING:
    import optuna

    from harness.store.locations import Stores


@click.command()
@store_options
@friendly_errors
def studies(runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> None:
    """List the studies in the storage: trials by state and the best PSNR."""
    quiet_libraries()
    from harness.store.locations import holds_no_store, store_file
    from harness.report.tables import studies_table

    stores = stores_from_options(runs_dir, storage, tracking_uri)
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
              help="Also write the trials table as CSV here, and the confirmed ranking beside it (STEM.confirmed.csv).")
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
    """Print a study's answer: its confirmed ranking (or that it has none), then its trials (state, params,
    final and best PSNR, gain over the reference, epochs, duration, MLflow run id).

    With --html, also the lab's analysis: the confirmed ranking, schedules against losses, curves by
    KL-annealing type, PSNR per frame, optimisation history and parameter importances, the trials table,
    the best rollout.
    """
    quiet_libraries()
    from harness.report.text import study_report
    from harness.store.locations import study_folder

    if out is not None and not html_report:
        raise UsageError("--out is the folder of the --html report: give --html too")
    stores = stores_from_options(runs_dir, storage, tracking_uri, write_tracking=html_report)  # --html logs there
    name = study_name(study)
    for path, option in ((csv_path, "--csv"), (markdown_path, "--markdown")):
        if path is not None:
            file_to_write(path, option)
    if html_report:
        folder = folder_to_write(out or stores.runs_dir / "reports" / study_folder(name),
                                 "--out" if out else stores.runs_given_as)
    loaded = existing_study(stores, name)
    if html_report and not loaded.get_trials(deepcopy=False):
        raise UsageError(f"--study {loaded.study_name}: the study has no trials yet; nothing to report")
    found = study_report(loaded, stores)
    click.echo(found.text())
    for path in found.write_csv(csv_path) if csv_path else []:
        echo(f"wrote {path}")
    if markdown_path:
        echo(f"wrote {found.write_markdown(markdown_path)}")
    if html_report:
        from harness.report.page import write_html_report
        from harness.store.tracking import StudyTracker

        index = write_html_report(loaded, found.confirmation, StudyTracker(stores, loaded.study_name), folder,
                                  progress=echo)
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

    from harness.outputs.files import json_safe, write_config
    from harness.outputs.names import seed_prefix
    from harness.store.locations import study_folder
    from harness.store.tracking import StudyTracker
    from harness.store.trials import best_trial

    if out_dir is not None and export is None:
        raise UsageError("--out is the folder of --export: give --export ckpt too")
    stores = stores_from_options(runs_dir, storage, tracking_uri, write_tracking=export is not None)
    name = study_name(study)
    if export is not None:
        out_dir = folder_to_write(out_dir or stores.runs_dir / "best" / study_folder(name),
                                  "--out" if out_dir else stores.runs_given_as)
    loaded = existing_study(stores, name)
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


def existing_study(stores: Stores, name: str) -> optuna.Study:
    """The stored study `name`; where the runs folder holds no store, say so and create none."""
    from harness.store.locations import holds_no_store, store_file
    from harness.store.trials import load_existing_study

    if holds_no_store(stores.storage_url):
        raise UsageError(f"--study {name}: no such study: {stores.store_label(stores.storage_url)} holds no study "
                         f"store (no {store_file(stores.storage_url)}); a sweep creates it")
    return load_existing_study(stores, name)
