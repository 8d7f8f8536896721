"""`harness confirm`: re-train a finished search's best configurations on fresh seeds, raced."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .common import (as_local_workers, check_worker_options, echo, friendly_errors, quiet_libraries, run_worker,
                     store_options, study_spec, worker_options, worker_stores)


@click.command()
@click.option("--study", required=True, help="A spec in studies/ by name or the path of a spec YAML; the spec's "
                                             "confirm section says what to confirm.")
@store_options
@worker_options
@friendly_errors
def confirm(study: str, runs_dir: Path | None, storage: str | None, tracking_uri: str | None, device: str,
            seed: int | None, pack: int | None, checkpoint_every: int, workers: int) -> None:
    """Confirm a finished search: its `top` trials, the best of each value of `per` and the reference,
    re-trained on fresh seeds (the same for each, so they compare paired by seed); racing stops a
    candidate whose gap to the leader lies below zero beyond its interval. Resumable, and shared by
    every worker given the same study and storage (`harness sweep` runs it when its search ends)."""
    quiet_libraries()
    from harness.worker.sweep import WorkerOptions, run_confirmation

    check_worker_options(pack, checkpoint_every, workers, device)
    spec = study_spec(study)
    stores = worker_stores(runs_dir, storage, tracking_uri)
    if workers > 1:
        as_local_workers("confirm", workers, {
            "--study": study, "--device": device, "--seed": seed, "--pack": pack,
            "--checkpoint-every": checkpoint_every}, stores)
    if pack is not None:
        spec = dataclasses.replace(spec, pack=pack)
    options = lambda stop: WorkerOptions(device=device, seed=seed, echo=echo, stop=stop,  # noqa: E731
                                         checkpoint_every=checkpoint_every)
    print_ranking(run_worker(spec.name, lambda stop: run_confirmation(spec, stores, options(stop))))


def print_ranking(summary: object) -> None:
    """The confirmed ranking so far, one line per candidate, the leader first."""
    from harness.ranking import ranking_rows

    echo(f"confirmation of {summary.study_name}: this worker ran {summary.ran} training(s)")
    for row in ranking_rows(summary.ranking):
        spread = f" ± {row['ci95']:.2f}" if row["ci95"] == row["ci95"] else ""
        gap = "" if row["rank"] == 1 else (f"; gap {row['gap_to_leader']:+.2f} ± {row['gap_ci95']:.2f} "
                                           f"({row['vs_leader']}), P(beats leader) {row['p_beats_leader']:.2f}")
        echo(f"  {row['rank']}. trial {row['search_trial']} ({row['picked_as']}): {row['confirmed_psnr']:.2f}{spread} dB "
             f"over {row['seeds']} fresh seeds (search {row['search_psnr']:.2f}){gap}"
             + (f"; {row['stopped']}" if row["stopped"] else ""))
