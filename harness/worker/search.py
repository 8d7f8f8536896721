"""A study spec's search in Optuna: a trial's suggested parameters, the sampler and the pruner."""
from __future__ import annotations

import decimal
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.spec.values import StudySpec


def suggest_params(trial: optuna.trial.BaseTrial, spec: StudySpec) -> dict[str, Any]:
    """Suggest the trial's values in file order; a conditional parameter only when its condition holds."""
    params: dict[str, Any] = {}
    for name, p in spec.search_space.items():
        if not p.active(params):
            continue
        if p.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            params[name] = trial.suggest_int(name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def trial_seed(seed: int, trial_number: int) -> int:
    """The sampler's seed for one trial: a hash of the study's seed and the trial's number."""
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """The spec's sampler, created afresh for each trial with a seed derived from the spec's
    seed and the trial's number (`trial_seed`).

    Optuna's samplers keep one random stream per process: every process that loads a study
    with the same seed draws the same points, so a rerun, an extension and each parallel worker
    would start by repeating points an earlier process drew. Trial numbers are unique within a
    study, so here no two trials share a stream, and a study run from scratch by one worker
    still draws the same points for the same seed. One inner sampler per trial in flight, so
    that a worker may hold several trials at once.
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._factory = factory
        self._seed = seed
        self._per_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def for_seed(self, seed: int) -> optuna.samplers.BaseSampler:
        """The spec's sampler with this seed (what a trial gets, with `trial_seed`)."""
        return self._factory(seed)

    def _sampler(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number not in self._per_trial:
            self._per_trial[trial.number] = self.for_seed(trial_seed(self._seed, trial.number))
        return self._per_trial[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._sampler(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded per trial (`PerTrialSeedSampler`) except the grid; `seed`
    overrides the spec's."""
    options = dict(spec.sampler)
    kind = options.pop("type")
    spec_seed = options.pop("seed")
    base_seed = spec_seed if seed is None else seed
    if kind == "grid":
        # The grid sampler numbers its shuffled grid and skips the numbers trials have taken, so
        # every trial must see the same shuffle: one instance. Racing workers may still pick one
        # point twice; the objective then skips the repeat (harness.objective.repeated_trial).
        return _sampler(kind, options, base_seed, spec)
    return PerTrialSeedSampler(lambda trial_seed: _sampler(kind, options, trial_seed, spec), base_seed)


def _sampler(kind: str, options: dict[str, Any], seed: int, spec: StudySpec) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if kind == "grid":
        return optuna.samplers.GridSampler(_grid(spec), seed=seed, **options)
    # Explicit, so that the behaviour does not follow Optuna's version default. The space may be
    # conditional, so multivariate TPE needs group=True to model each sub-space jointly.
    options = dict(options)
    multivariate = options.pop("multivariate", False)
    if not multivariate:
        return optuna.samplers.TPESampler(multivariate=False, seed=seed, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is experimental
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, **options)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    options = dict(spec.pruner)
    kind = options.pop("type")
    if kind == "none":
        return optuna.pruners.NopPruner()
    return {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
            "threshold": optuna.pruners.ThresholdPruner}[kind](**options)


def _grid(spec: StudySpec) -> dict[str, list]:
    """Every parameter's grid values; floats step from low to high in decimal, so 0.1 + 0.2 stays 0.3."""
    grid: dict[str, list] = {}
    for name, p in spec.search_space.items():
        if p.kind == "categorical":
            grid[name] = list(p.choices)
        elif p.kind == "int":
            grid[name] = list(range(p.low, p.high + 1, p.step or 1))
        else:
            low, step = decimal.Decimal(str(p.low)), decimal.Decimal(str(p.step))
            count = int((decimal.Decimal(str(p.high)) - low) // step) + 1
            grid[name] = [float(low + k * step) for k in range(count)]
    return grid
