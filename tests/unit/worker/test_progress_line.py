"""A worker's line per finished trial counts the study's finished trials, not those other workers still run."""
from types import SimpleNamespace

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from harness.worker.loop import SweepLoop


def trial(number: int, state: TrialState, value: float | None = None):
    made = create_trial(state=state, value=value, params={"lr": 0.002},
                        distributions={"lr": FloatDistribution(1e-3, 5e-3, log=True)})
    made.number = number
    return made


def test_the_line_counts_finished_trials_and_leaves_running_ones_out():
    lines: list[str] = []
    loop = SweepLoop(SimpleNamespace(parts=SimpleNamespace(study=None), echo=lines.append), source=None,
                     target=3, timeout=None, trials_at_once=1, pack=1)
    loop.durations = [60.0]
    finished = trial(1, TrialState.COMPLETE, 21.5)
    loop._report([trial(0, TrialState.RUNNING), finished], finished)     # trial 0 runs on another worker
    assert lines == ["trial 1 COMPLETE: 21.50 dB in 1m00s | best 21.50 dB (trial 1) | study 1/3 | "
                     "ETA 2m00s for this worker alone"]
