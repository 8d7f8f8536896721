"""What a sweep costs: the smoke study's wall time, the harness's overhead per trial, and the
trials per hour a study's budget allows on this machine.

    python bench/sweep_cost.py                 # smoke study in a temporary runs directory
    python bench/sweep_cost.py --budget-of kl_schedules --steps 6

Overhead is a trial's wall time minus the time spent training and validating
(baselines included): Optuna, MLflow logging, plots, the GIF, checkpoints.
The budget estimate times a few real training steps and a per-epoch rollout of
the study's model, then scales them to its epochs and sequence counts.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from common import record
from harness.worker.datasets import frames_cache_dir, resolve_data_root
from harness.store.locations import resolve_stores
from harness.spec import load_study_spec, train_values
from harness.worker.sweep import WorkerOptions, run_sweep
from models.config import TrainConfig
from models.data import load_dance_data
from models.trainer import Trainer


def smoke_cost(study: str) -> list[str]:
    spec = load_study_spec(study)
    with tempfile.TemporaryDirectory() as tmp:
        stores = resolve_stores(Path(tmp))
        resolve_data_root(spec.data, 32, 64)      # generate the data set outside the timing
        start = time.perf_counter()
        run_sweep(spec, stores, WorkerOptions(device="cpu", echo=lambda _: None))
        wall = time.perf_counter() - start
        import optuna
        trials = optuna.load_study(study_name=spec.name, storage=stores.storage_url).get_trials()
    lines = [f"- `{study}` study: {len(trials)} trials in {wall:.1f} s wall (stores created, data loaded, "
             f"trials run; data generation excluded)"]
    for t in trials:
        attrs = t.user_attrs
        lines.append(f"  - trial {t.number} {t.state.name}: {attrs['trial_seconds']:.1f} s, of which validation "
                     f"{attrs['validation_seconds']:.2f} s ({100 * attrs['validation_share']:.0f}%) and harness "
                     f"overhead {attrs['overhead_seconds']:.2f} s ({100 * attrs['overhead_share']:.0f}%)")
    overhead = [t.user_attrs["overhead_seconds"] for t in trials]
    share = sum(overhead) / sum(t.user_attrs["trial_seconds"] for t in trials)
    lines.append(f"- overhead per trial: {sum(overhead) / len(overhead):.2f} s on average, {100 * share:.0f}% "
                 "of trial time at the smoke budget")
    return lines


def budget_estimate(study: str, steps: int) -> list[str]:
    spec = load_study_spec(study)
    config = TrainConfig.from_dict(train_values(spec, {}) | {"device": "cpu", "baselines": False})
    root = resolve_data_root(spec.data, config.height, config.width)
    data = load_dance_data(root, height=config.height, width=config.width, train_vi_len=config.train_vi_len,
                           val_vi_len=config.val_vi_len, cache_dir=frames_cache_dir())
    trainer = Trainer(config, data)
    trainer.train_img, trainer.train_label = trainer.train_img[:steps * config.batch_size], \
        trainer.train_label[:steps * config.batch_size]
    sequences = len(data.train_runs(config.train_vi_len, config.partial)[0])
    trainer.advance()                                      # warm-up
    trainer.advance()
    record = trainer.records[-1]
    step_s = record.seconds / steps
    epoch_val_s = record.val_seconds
    final_val_s = epoch_val_s * (config.val_vi_len - 1) / (trainer.epoch_val_len - 1)
    train_epoch_s = math.ceil(sequences / config.batch_size) * step_s
    trial_s = config.epochs * (train_epoch_s + epoch_val_s) + final_val_s
    validation_share = (config.epochs * epoch_val_s + final_val_s) / trial_s
    # The same budget validating the full rollout every epoch (no val_epoch_len).
    full_every_epoch_s = config.epochs * (train_epoch_s + final_val_s)
    return [
        f"- `{study}` budget ({config.epochs} epochs x {sequences} sequences of {config.train_vi_len} frames, "
        f"batch {config.batch_size}, dims {config.f_dim}/{config.l_dim}/{config.n_dim}/{config.d_out_dim}, "
        f"{len(trainer.validation.images)} validation sequence(s) of {trainer.epoch_val_len} frames per epoch and "
        f"{config.val_vi_len} at the end):",
        f"  - measured: {step_s:.2f} s per training step ({config.batch_size * (config.train_vi_len - 1) / step_s:.1f}"
        f" predicted frames/s), {epoch_val_s:.1f} s per epoch's validation rollout",
        f"  - estimated: {(train_epoch_s + epoch_val_s) / 60:.1f} min per epoch, {trial_s / 3600:.1f} h per full "
        f"trial, {3600 / trial_s:.2f} trials per hour (without pruning) on {torch.get_num_threads()} threads",
        f"  - validation: {final_val_s:.0f} s for the final {config.val_vi_len}-frame rollout, "
        f"{100 * validation_share:.1f}% of the trial; the full rollout every epoch would take "
        f"{100 * config.epochs * final_val_s / full_every_epoch_s:.1f}% of a {full_every_epoch_s / 3600:.1f} h trial",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="study to run for wall time and overhead")
    parser.add_argument("--budget-of", default="kl_schedules", help="study whose budget to estimate")
    parser.add_argument("--steps", type=int, default=6, help="training steps timed for the estimate")
    args = parser.parse_args()
    lines = smoke_cost(args.study) + budget_estimate(args.budget_of, args.steps)
    record("Sweep cost: smoke wall time, harness overhead per trial, trials per hour", lines)


if __name__ == "__main__":
    main()
