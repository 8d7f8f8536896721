"""A study answered two ways, with the harness itself (`harness sweep --workers N`), one after the other:

(a) seeded up front: each of the spec's queued configurations trained on SEEDED seeds in the search
    (no confirmation): its ranking is judged on the seeds that made it;
(b) search, then confirm: the spec as written (one seed a trial, then its confirm section: the best
    configurations again on fresh seeds, raced).

For each: seed-trainings spent (and epochs), wall time, the winner with its 95% interval, and the
search-stage winner's optimism (its search score minus its confirmed mean; (a) has no fresh seeds to
measure it on); for (b) also the trainings racing saved against seeding every candidate fully.

    python bench/confirm_vs_seeded.py [--study kl_schedules_cpu] [--workers 2] [--runs-dir runs/confirm-vs-seeded]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import record  # noqa: E402
from harness.outputs.names import confirm_study_name  # noqa: E402
from harness.report.confirmation import read_confirmation  # noqa: E402
from harness.spec import load_study_spec  # noqa: E402
from harness.store.locations import resolve_stores  # noqa: E402
from harness.store.trials import best_trial, retried_numbers  # noqa: E402

SEEDED = 3


def seeded_spec(source: Path, out: Path) -> Path:
    """The spec's first four queued configurations, each trained on SEEDED seeds, nothing sampled or confirmed."""
    raw = yaml.safe_load(source.read_text())
    queued = raw["enqueue"][:4]
    raw |= {"name": raw["name"] + "_seeded", "seeds": SEEDED, "n_trials": len(queued), "enqueue": queued,
            "description": raw["description"] + f" (every configuration on {SEEDED} seeds up front)"}
    raw.pop("confirm", None)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def sweep(spec: Path, runs: Path, workers: int, log: Path) -> float:
    """`harness sweep` with `workers` local workers; its wall time in seconds (its output in `log`)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--runs-dir", str(runs),
                        "--device", "cpu", "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT,
                       check=True)
    return time.perf_counter() - started


def trainings(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(seed-trainings, epochs) that the trials spent: a pruned or failed one counts what it trained."""
    retried = retried_numbers(trials)
    runs = epochs = 0
    for t in trials:
        if t.state == TrialState.WAITING or t.number in retried:
            continue
        seeds = len(t.user_attrs.get("seeds") or [1])
        runs += seeds
        epochs += seeds * int(t.user_attrs.get("epochs_run") or 0)
    return runs, epochs


def params(trial: optuna.trial.FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="kl_schedules_cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/confirm-vs-seeded"))
    parser.add_argument("--print-only", action="store_true", help="print the figures, append nothing")
    args = parser.parse_args()
    spec = load_study_spec(args.study)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    seeded = seeded_spec(spec.path, args.runs_dir / f"{spec.name}_seeded.yaml")
    lines = [f"`{spec.name}` ({spec.path}), `harness sweep --workers {args.workers}`, one way after the other; "
             f"each training {spec.budget['epochs']} epochs.", "",
             "| way | seed-trainings (epochs) | wall time | winner | its 95% interval | search-stage winner's optimism |",
             "| --- | --- | --- | --- | --- | --- |"]

    runs = args.runs_dir / "seeded"
    wall = sweep(seeded, runs, args.workers, args.runs_dir / "seeded.log")
    study = optuna.load_study(study_name=spec.name + "_seeded", storage=resolve_stores(runs).storage_url)
    spent, epochs = trainings(study.get_trials())
    best = best_trial(study.get_trials())
    lines.append(f"| (a) {SEEDED} seeds a configuration up front | {spent} ({epochs}) | {wall / 60:.1f} min | "
                 f"trial {best.number} ({params(best)}) | {best.value:.2f} ± {best.user_attrs['value_ci95']:.2f} dB "
                 f"on the seeds that picked it | not measurable (no fresh seeds) |")

    runs = args.runs_dir / "confirmed"
    wall = sweep(spec.path, runs, args.workers, args.runs_dir / "confirmed.log")
    stores = resolve_stores(runs)
    search = optuna.load_study(study_name=spec.name, storage=stores.storage_url).get_trials()
    confirm = optuna.load_study(study_name=confirm_study_name(spec.name), storage=stores.storage_url).get_trials()
    found = read_confirmation(stores, spec.name)
    spent_search, epochs_search = trainings(search)
    spent_confirm, epochs_confirm = trainings(confirm)
    leader = found.ranking[0]
    searched_best = best_trial(search)
    picked = next(r for r in found.ranking if r.candidate.trial == searched_best.number)
    lines.append(f"| (b) 1 seed a trial, then confirmed on up to {len(found.plan.seeds)} fresh seeds, raced | "
                 f"{spent_search} + {spent_confirm} = {spent_search + spent_confirm} "
                 f"({epochs_search + epochs_confirm}) | {wall / 60:.1f} min | trial {leader.candidate.trial} "
                 f"({', '.join(f'{k}={v}' for k, v in leader.candidate.params.items())}) | "
                 f"{leader.value.mean:.2f} ± {leader.value.half_width:.2f} dB on {leader.seeds} fresh seeds | "
                 f"trial {searched_best.number}: {searched_best.value:.2f} in the search, "
                 f"{picked.value.mean:.2f} confirmed: {picked.optimism:+.2f} dB |")
    lines += ["", f"(b) confirmation: {found.summary()}.", "", "Confirmed ranking (b):", "",
              "| rank | search trial | picked as | params | seeds | confirmed PSNR | gap to leader | P(beats leader) | "
              "search PSNR | optimism | stopped |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in found.table().to_dict("records"):
        lines.append(f"| {row['rank']} | {row['search_trial']} | {row['picked_as']} | {row['params']} | {row['seeds']} | "
                     f"{row['confirmed_psnr']:.2f} ± {row['ci95']:.2f} | {row['gap_to_leader']:+.2f} ± "
                     f"{row['gap_ci95']:.2f} ({row['vs_leader']}) | "
                     f"{'-' if row['rank'] == 1 else format(row['p_beats_leader'], '.2f')} | "
                     f"{row['search_psnr']:.2f} | {row['optimism']:+.2f} | {row['stopped'] or '-'} |")
    record(f"Search then confirm against seeding up front: {spec.name}", lines, append=not args.print_only)


if __name__ == "__main__":
    main()
