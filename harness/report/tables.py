"""Studies and their trials as pandas tables, read from the Optuna storage."""
from __future__ import annotations

import math

import optuna
import pandas as pd
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from typing import Mapping

from harness.intervals import Interval, difference_interval, mean_interval, paired_difference_interval
from harness.store.locations import Stores
from harness.store.optuna_storage import open_storage
from harness.store.trials import STATES, best_trial, reference_trial, seed_values, state_counts


# The question the report groups trials by: the lab's KL-annealing schedules (a TrainConfig key).
ANNEAL = "kl_anneal_type"


def studies_table(stores: Stores) -> pd.DataFrame:
    """One row per study: trial counts by state and the best value."""
    storage = open_storage(stores)
    rows = []
    for name in sorted(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        best = best_trial(trials)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        rows.append({"study": name, "trials": len(trials), **state_counts(trials),
                     "best_psnr": best.value if best else math.nan,
                     "best_trial": best.number if best else None,
                     "started": min(starts).strftime("%Y-%m-%d %H:%M") if starts else ""})
    return pd.DataFrame(rows, columns=["study", "trials", *(state.name for state in STATES), "best_psnr",
                                       "best_trial", "started"])


def gap_interval(a: FrozenTrial, b: FrozenTrial | None) -> Interval:
    """a's value minus b's with a 95% interval: paired by seed where both trained the same seeds
    (a sweep gives every trial the same ones), else Welch's; NaN without b or values."""
    if b is None:
        return Interval(math.nan, math.nan)
    values_a, values_b = seed_values(a), seed_values(b)
    seeds = a.user_attrs.get("seeds")
    if seeds and seeds == b.user_attrs.get("seeds") and len(values_a) == len(values_b) == len(seeds):
        return paired_difference_interval(values_a, values_b)
    return difference_interval(values_a, values_b)


def verdict(gap: Interval) -> str:
    """How a gap reads: beyond noise either way, within it, or unknown (too few seeds)."""
    if not math.isfinite(gap.mean):
        return ""
    if not math.isfinite(gap.half_width):
        return "no interval (1 seed)"
    if gap.holds_zero:
        return "within noise"
    return "better" if gap.mean > 0 else "worse"


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, params, final PSNR as the mean over its seeds with a 95% interval,
    the gain over the study's reference trial (its first enqueued one) with its interval (gap_interval) and
    whether it lies beyond noise, the best per-epoch PSNR, epochs, duration, MLflow run."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    reference = reference_trial(trials)
    retried_as = {history[-1]: t.number for t in trials
                  if (history := RetryHeartbeatStaleTrialCallback.retry_history(t))}
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else math.nan
        values = seed_values(t)
        value = mean_interval(values)
        gap = gap_interval(t, reference)
        rows.append({
            "trial": t.number, "state": t.state.name,
            **{name: t.params.get(name) for name in param_names},
            "seeds": len(values) or len(t.user_attrs.get("seeds") or [0]),
            "final_psnr": value.mean,
            "ci95": value.half_width,
            "gain_vs_reference": gap.mean,
            "gain_ci95": gap.half_width,
            "vs_reference": "reference" if reference is not None and t.number == reference.number else verdict(gap),
            # over the figure's pixels and the background's, where the data has masks
            "figure_psnr": _number(t.user_attrs.get("final_val_psnr_figure")),
            "background_psnr": _number(t.user_attrs.get("final_val_psnr_background")),
            "best_epoch_psnr": _number(t.user_attrs.get("best_val_psnr")),
            "epochs_run": t.user_attrs.get("epochs_run"),
            "duration_s": round(duration, 1),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
            "note": _note(t, retried_as.get(t.number)),
        })
    table = pd.DataFrame(rows)
    regions = [column for column in ("figure_psnr", "background_psnr") if column in table and table[column].isna().all()]
    return table.drop(columns=regions)     # no masks, no region columns


def best_per_anneal(trials: list[FrozenTrial], kind_of: Mapping[int, str] | None = None) -> dict[str, FrozenTrial]:
    """The best completed trial of each KL-annealing type: searched, else `kind_of` (trial -> type, read
    from the runs' params where the spec fixed the type)."""
    best: dict[str, FrozenTrial] = {}
    for t in trials:
        kind = t.params.get(ANNEAL) or (kind_of or {}).get(t.number)
        if t.state == TrialState.COMPLETE and kind and (kind not in best or t.value > best[kind].value):
            best[kind] = t
    return best


def anneal_table(study: optuna.Study, kind_of: Mapping[int, str] | None = None) -> pd.DataFrame:
    """The best completed trial of each KL-annealing type with its 95% interval, its gain over the
    reference trial and over the best other type, each with its interval (gap_interval) and a verdict."""
    trials = study.get_trials(deepcopy=False)
    best = best_per_anneal(trials, kind_of)
    kinds = {t.number: kind for kind, t in best.items()}
    reference = reference_trial(trials)
    rows = []
    for kind, t in sorted(best.items(), key=lambda item: -item[1].value):
        values = seed_values(t)
        value = mean_interval(values)
        gap = gap_interval(t, reference)
        others = [o for k, o in best.items() if k != kind]
        runner_up = max(others, key=lambda o: o.value) if others else None
        lead = gap_interval(t, runner_up)
        rows.append({ANNEAL: kind, "trial": t.number, "seeds": len(values),
                     "final_psnr": value.mean, "ci95": value.half_width,
                     "gain_vs_reference": gap.mean, "gain_ci95": gap.half_width, "vs_reference": verdict(gap),
                     "vs_best_other_type": f"{kinds[runner_up.number]} (trial {runner_up.number})" if runner_up else "",
                     "gap": lead.mean, "gap_ci95": lead.half_width, "gap_verdict": verdict(lead)})
    return pd.DataFrame(rows, columns=[ANNEAL, "trial", "seeds", "final_psnr", "ci95", "gain_vs_reference",
                                       "gain_ci95", "vs_reference", "vs_best_other_type", "gap", "gap_ci95",
                                       "gap_verdict"])


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _note(trial: optuna.trial.FrozenTrial, retried_as: int | None) -> str:
    """Reference trial, retries and resumes, why a trial failed."""
    parts = []
    if trial.user_attrs.get("enqueued") == "reference":
        parts.append("reference")
    if "repeat_of" in trial.user_attrs:
        parts.append(f"repeat of trial {trial.user_attrs['repeat_of']}'s point, not trained")
    history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    if history:
        resumed = trial.user_attrs.get("resumed_epochs")
        parts.append(f"retry of trial {history[-1]}" + (f", resumed after epoch {resumed}" if resumed else ""))
    if trial.state == TrialState.FAIL:
        # Only a trial whose worker died has no reason: the objective records every other failure.
        parts.append(str(trial.user_attrs.get("fail_reason") or "worker lost: no heartbeat")[:120])
    if retried_as is not None:
        parts.append(f"retried as trial {retried_as}")
    return "; ".join(parts)
