"""Console progress for training: epochs, steps, losses, PSNR and ETA."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from models.trainer import Callback, Trainer, TrainResult

from .run_folder import mean_psnr


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
    """Prints a line per epoch; within an epoch, a live step line on a terminal,
    or a step line every `log_every` seconds in a log file."""

    def __init__(self, stream: TextIO | None = None, log_every: float = 30.0, prefix: str = ""):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.log_every = log_every
        self.prefix = prefix
        self._epoch_start = 0.0
        self._last_log = 0.0
        self._epochs_timed = 0
        self._epochs_seconds = 0.0   # this trainer's own epochs: seeds trained in lockstep take turns

    def _print(self, text: str, end: str = "\n") -> None:
        self.stream.write(self.prefix + text + end)
        self.stream.flush()

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.config
        params = sum(p.numel() for p in trainer.model.parameters())
        self._print(
            f"training on {trainer.device}: {params / 1e6:.2f} M parameters, "
            f"{len(trainer.train_img)} sequences of {cfg.train_vi_len} frames "
            f"({trainer.steps_per_epoch} steps/epoch), {len(trainer.validation.images)} validation "
            f"sequence(s) rolled out over {trainer.epoch_val_len} frames per epoch and {cfg.val_vi_len} at the end, "
            f"epochs {trainer.epoch + 1}..{cfg.epochs}")
        for name, per_frame in trainer.baselines.items():
            self._print(f"baseline {name}: val PSNR {mean_psnr(per_frame):.2f} dB")
        self._epochs_timed = 0
        self._epochs_seconds = 0.0

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._epoch_start = self._last_log = time.perf_counter()

    def on_step_end(self, trainer: Trainer, step: int, steps: int, loss: float) -> None:
        now = time.perf_counter()
        if not self.live and now - self._last_log < self.log_every:
            return
        self._last_log = now
        elapsed = now - self._epoch_start
        frames = (step + 1) * trainer.config.batch_size * trainer.config.train_vi_len
        eta = elapsed / (step + 1) * (steps - step - 1)
        text = (f"epoch {trainer.epoch + 1}/{trainer.config.epochs} step {step + 1}/{steps} "
                f"loss {loss:.4g} | {frames / max(elapsed, 1e-9):.1f} frames/s | epoch ETA {format_duration(eta)}")
        if self.live:
            self._print(f"\r{text}\033[K", end="")
        else:
            self._print(text)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        self._epochs_timed += 1
        self._epochs_seconds += now - self._epoch_start
        per_epoch = self._epochs_seconds / self._epochs_timed
        remaining = trainer.config.epochs - trainer.epoch
        text = (f"epoch {metrics['epoch'] + 1}/{trainer.config.epochs}: loss {metrics['loss']:.4g} "
                f"recon {metrics['recon']:.4g} kl {metrics['kl']:.4g} beta {metrics['beta']:.3f} "
                f"tfr {metrics['tfr']:.2f} | val PSNR {metrics['val_psnr']:.2f} dB "
                f"(best {trainer.best_val_psnr:.2f}) | {format_duration(now - self._epoch_start)}"
                f" | ETA {format_duration(per_epoch * remaining)}")
        self._print(("\r" if self.live else "") + text + ("\033[K" if self.live else ""))

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        final = (f"; final {trainer.config.val_vi_len}-frame rollout {result.final_val_psnr:.2f} dB"
                 if result.status == "completed" else "")
        self._print(f"{result.status}: {result.message}; last val PSNR {result.val_psnr:.2f} dB, "
                    f"best {result.best_val_psnr:.2f} dB{final}")
