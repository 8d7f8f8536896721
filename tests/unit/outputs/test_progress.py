"""The console progress lines: what each epoch took and how long is left."""
from __future__ import annotations

import io

import pytest

from harness.outputs import progress
from harness.outputs.progress import ProgressReporter, format_duration
from models.records import EpochRecord


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 + 120, "1h02m")])
def test_durations_read_as_hours_minutes_seconds(seconds, text):
    assert format_duration(seconds) == text


def test_epoch_time_and_eta_count_only_the_trainers_own_epochs(monkeypatch):
    # Seeds trained in lockstep take turns: between two epochs of one seed the others train.
    # That wait is not this seed's epoch time, nor part of its ETA.
    clock = iter([100.0, 160.0, 400.0, 460.0])    # epoch 1: 100..160; the others train; epoch 2: 400..460
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    reporter = ProgressReporter(stream=stream)
    reporter.epochs = 4     # what on_train_start would have read from the run's config
    for epoch in range(2):
        reporter.on_epoch_start(epoch)
        reporter.on_epoch_end(EpochRecord(epoch=epoch, loss=0.1, recon=0.1, kl=0.0, beta=1.0, tfr=1.0,
                                          teacher_forced=1.0, lr=1e-3, skipped_steps=0, rewinds=0, seconds=60.0,
                                          val_psnr=20.0))
    first, second = stream.getvalue().splitlines()
    assert first.startswith("epoch 1/4:") and "| 1m00s | ETA 3m00s" in first
    assert second.startswith("epoch 2/4:") and "| 1m00s | ETA 2m00s" in second
