"""Console progress for training: epochs, steps, losses, PSNR and ETA, from the records a trainer publishes."""
from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from models.records import Callback, EpochRecord, RunStart, RunSummary, StepRecord

# A live step line on a terminal is redrawn at most this often: reading the loss waits for the device.
LIVE_EVERY = 0.5


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressReporter(Callback):
    """Prints a line per epoch; within an epoch, a live step line on a terminal (redrawn every
    LIVE_EVERY seconds), or a step line every `log_every` seconds in a log file."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 30.0, prefix: str = ""):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.log_every = log_every
        self.prefix = prefix
        self.epochs = 0
        self.best = -math.inf
        self._epoch_start = 0.0
        self._last_log = 0.0
        self._epochs_timed = 0
        self._epochs_seconds = 0.0   # this trainer's own epochs: seeds trained in lockstep take turns

    def _print(self, text: str, end: str = "\n") -> None:
        self.stream.write(self.prefix + text + end)
        self.stream.flush()

    def on_train_start(self, start: RunStart) -> None:
        config = start.config
        self.epochs = config.epochs
        self.best = max((r.val_psnr for r in start.records), default=-math.inf)
        self._print(
            f"training on {start.device}: {start.parameters / 1e6:.2f} M parameters, "
            f"{start.train_sequences} sequences of {config.train_vi_len} frames "
            f"({start.steps_per_epoch} steps/epoch), {start.val_sequences} validation "
            f"sequence(s) rolled out over {start.epoch_val_len} frames per epoch and {config.val_vi_len} at the end, "
            f"epochs {start.first_epoch + 1}..{config.epochs}")
        for name, curves in start.baselines.items():
            self._print(f"baseline {name}: val PSNR {curves.mean():.2f} dB")
        self._epochs_timed = 0
        self._epochs_seconds = 0.0

    def on_epoch_start(self, epoch: int) -> None:
        self._epoch_start = self._last_log = time.perf_counter()

    def on_step_end(self, step: StepRecord) -> None:
        now = time.perf_counter()
        if now - self._last_log < (LIVE_EVERY if self.live else self.log_every):
            return
        self._last_log = now
        elapsed = now - self._epoch_start
        done = step.step + 1
        eta = elapsed / done * (step.steps - done)
        text = (f"epoch {step.epoch + 1}/{self.epochs} step {done}/{step.steps} "
                f"loss {step.loss:.4g} | {done * step.frames / max(elapsed, 1e-9):.1f} frames/s | "
                f"epoch ETA {format_duration(eta)}")
        if self.live:
            self._print(f"\r{text}\033[K", end="")
        else:
            self._print(text)

    def on_epoch_end(self, record: EpochRecord) -> None:
        now = time.perf_counter()
        self._epochs_timed += 1
        self._epochs_seconds += now - self._epoch_start
        self.best = max(self.best, record.val_psnr)
        remaining = self.epochs - record.epoch - 1
        text = (f"epoch {record.epoch + 1}/{self.epochs}: loss {record.loss:.4g} "
                f"recon {record.recon:.4g} kl {record.kl:.4g} beta {record.beta:.3f} "
                f"tfr {record.tfr:.2f} | val PSNR {record.val_psnr:.2f} dB "
                f"(best {self.best:.2f}) | {format_duration(now - self._epoch_start)}"
                f" | ETA {format_duration(self._epochs_seconds / self._epochs_timed * remaining)}")
        self._print(("\r" if self.live else "") + text + ("\033[K" if self.live else ""))

    def on_train_end(self, summary: RunSummary) -> None:
        final = (f"; final {len(summary.curves.whole)}-frame rollout {summary.final_val_psnr:.2f} dB"
                 if summary.completed and summary.curves else "")
        self._print(f"{summary.status}: {summary.message}; last val PSNR {summary.val_psnr:.2f} dB, "
                    f"best {summary.best_val_psnr:.2f} dB{final}")
