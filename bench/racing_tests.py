"""Which paired test can race a confirmation's candidates on a handful of seeds: Optuna's WilcoxonPruner
(a signed-rank test) or the paired Student-t interval harness/ranking.py uses.

Measured two ways: (1) the smallest p-value the signed-rank test can reach with n seeds, and whether each
rule stops a candidate that is 3 dB below the leader on every seed (Optuna's WilcoxonPruner run on a real
study, the per-seed values reported as its steps); (2) on the per-seed values of a real study
(kl_schedules_cpu, docs/kl-findings.md, 3 seeds), which gaps each rule calls.

    python bench/racing_tests.py [--print-only]
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import optuna
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import record  # noqa: E402
from harness.ranking import paired_gap  # noqa: E402

# kl_schedules_cpu at the demo's recipe (2026-12-07), final 630-frame PSNR on seeds 0, 1, 2.
RECORDED = {"None": [24.75, 24.25, 23.92], "Sigmoid": [24.31, 23.96, 23.40], "Monotonic": [22.03, 24.23, 23.36]}


def smallest_p(n: int, alternative: str) -> float:
    """The signed-rank test's p when every one of n paired gaps has the same sign (its most extreme case)."""
    return float(stats.wilcoxon([-1.0 - k for k in range(n)], alternative=alternative).pvalue)


def wilcoxon_pruner_stops(leader: list[float], candidate: list[float]) -> int | None:
    """The number of seeds after which Optuna's WilcoxonPruner (its defaults) prunes `candidate` against the
    completed `leader`, its per-seed values reported as steps; None if it never does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.WilcoxonPruner())
        best = study.ask()
        for step, value in enumerate(leader):
            best.report(value, step)
        study.tell(best, sum(leader) / len(leader))
        trial = study.ask()
        for step, value in enumerate(candidate):
            trial.report(value, step)
            if trial.should_prune():
                return step + 1
    return None


def t_rule_stops(leader: list[float], candidate: list[float]) -> int | None:
    """The number of seeds after which the racing rule (paired 95% t interval wholly below zero) stops it."""
    for n in range(2, len(candidate) + 1):
        gap = paired_gap({"c": dict(enumerate(candidate[:n])), "l": dict(enumerate(leader[:n]))}, "c", "l")
        if math.isfinite(gap.half_width) and gap.high < 0:
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-only", action="store_true", help="print the figures, append nothing")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    lines = ["| seeds | signed-rank smallest p, two-sided / one-sided | 95% t half-width in standard errors |",
             "| --- | --- | --- |"]
    for n in range(2, 9):
        lines.append(f"| {n} | {smallest_p(n, 'two-sided'):.4f} / {smallest_p(n, 'less'):.4f} | "
                     f"{stats.t.ppf(0.975, n - 1):.2f} |")
    # A candidate 3 dB below the leader on every seed, with 0.3 dB of its own noise.
    leader = [24.0, 23.1, 24.6, 23.8, 24.2, 23.5, 24.9, 23.3]
    candidate = [v - 3.0 + e for v, e in zip(leader, [0.2, -0.3, 0.1, 0.3, -0.2, 0.0, -0.1, 0.2])]
    lines += ["", "A candidate 3 dB below the leader on every seed (own noise 0.3 dB): stopped after "
              f"{wilcoxon_pruner_stops(leader, candidate)} seeds by Optuna's WilcoxonPruner (defaults: p < 0.1, "
              f"one-sided), after {t_rule_stops(leader, candidate)} by the paired t rule.", "",
              "kl_schedules_cpu's recorded seeds (0, 1, 2) against None, the best:", "",
              "| candidate | paired gap, 95% t | t rule stops after | WilcoxonPruner prunes after |", "| --- | --- | --- | --- |"]
    for name in ("Sigmoid", "Monotonic"):
        gap = paired_gap({"c": dict(enumerate(RECORDED[name])), "l": dict(enumerate(RECORDED["None"]))}, "c", "l")
        stops = t_rule_stops(RECORDED["None"], RECORDED[name])
        pruned = wilcoxon_pruner_stops(RECORDED["None"], RECORDED[name])
        lines.append(f"| {name} | {gap.mean:+.2f} ± {gap.half_width:.2f} dB | "
                     f"{f'{stops} seeds' if stops else 'never (3 seeds)'} | "
                     f"{f'{pruned} seeds' if pruned else 'never (3 seeds)'} |")
    record("Racing: the signed-rank test against the paired t interval on a few seeds", lines,
           append=not args.print_only)


if __name__ == "__main__":
    main()
