"""Packing: the share of the fp32 roof a training step reaches at the dims studies use, and what running
N members as one batched model (models.packing, vmap over stacked weights) buys over N separate steps,
measured side by side in one run.

    python bench/packing.py [--device auto] [--packs 1,2,4,8] [--repeats 2] [--sweep-trials 8]

It also runs the smoke study end to end with `pack` 1, 2, 4, 8 (`harness sweep --pack N`, one worker,
every trial to its end: no pruner) and reports trials per hour, so what a researcher's sweep gains is
on record beside the step-level figures.

Each setting is a study's reference trial (studies/*.yaml): its dims, options, batch size and
training-sequence length. A step
is the trainer's teacher-forced pass, forward and backward. "separate" runs the members one after
another with the trainer's default execution on this device; "packed" runs them in one vmapped pass.
The largest differences between the two (losses and gradients, relative) are printed beside.
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import record
from model_speed import attainable_flops, best_time

from harness.worker.datasets import resolve_data_root
from harness.store.locations import resolve_stores
from harness.spec import load_study_spec, train_values
from harness.worker.sweep import WorkerOptions, run_sweep
from models.config import TrainConfig
from models.cvae import VideoCVAE
from models.execution import Execution
from models.packing import PackedModels
from models.execution import resolve_device

HEIGHT, WIDTH = 32, 64
STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


@dataclass(frozen=True)
class Setting:
    """A study's model and training batch: its reference trial's config (the first enqueued)."""
    study: str
    config: TrainConfig

    @classmethod
    def of(cls, study: str) -> "Setting":
        spec = load_study_spec(study)
        return cls(study, TrainConfig.from_dict(train_values(spec, spec.enqueue[0] if spec.enqueue else {})))

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return self.config.f_dim, self.config.l_dim, self.config.n_dim, self.config.d_out_dim

    @property
    def batch(self) -> int:
        return self.config.batch_size

    @property
    def length(self) -> int:
        return self.config.train_vi_len

    @property
    def name(self) -> str:
        options = [f"output {self.config.output}"] + (["first frame"] if self.config.first_frame else [])
        return f"{self.study} (F,L,N,D = {self.dims}, {', '.join(options)})"


STUDIES = ("smoke", "kl_schedules_cpu", "kl_schedules")


def members(setting: Setting, n: int, device: torch.device) -> list[VideoCVAE]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(VideoCVAE.from_config(setting.config).to(device))
    return out


def inputs(setting: Setting, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shape = (n, setting.batch, setting.length, 3, HEIGHT, WIDTH)
    eps = (n, setting.batch * (setting.length - 1), setting.dims[2], HEIGHT, WIDTH)
    return tuple(t.to(device) for t in (torch.rand(shape, generator=g), torch.rand(shape, generator=g),
                                        torch.randn(eps, generator=g)))


def loss_of(pred: torch.Tensor, frames: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    return (pred - frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum() + kl.sum()


def separate_step(models: list[VideoCVAE], execution: Execution, frames, poses, eps) -> list[float]:
    losses = []
    for i, model in enumerate(models):
        with execution.autocast(frames.device):
            pred, kl = model.reconstruct(frames[i], poses[i], True, frames_per_pass=execution.frames_per_pass,
                                         eps=eps[i])
        loss = loss_of(pred.float(), frames[i], kl.float())
        model.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(loss.item())
    return losses


def packed_step(packed: PackedModels, frames, poses, eps) -> list[float]:
    pred, kl = packed.reconstruct(frames, poses, eps, True)
    losses = [loss_of(pred[i], frames[i], kl[i]) for i in range(len(packed.members))]
    for model in packed.members:
        model.zero_grad(set_to_none=True)
    sum(losses).backward()
    return [loss.item() for loss in losses]


def gradients(models: list[VideoCVAE]) -> list[torch.Tensor]:
    return [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in models]


def roof_line(setting: Setting, device: torch.device, peak: float, repeats: int) -> str:
    (model,) = members(setting, 1, device)
    execution = Execution.default_for(device, setting.dims[3], HEIGHT, WIDTH)
    model = execution.prepare(model)
    frames, poses, eps = inputs(setting, 1, device)
    with FlopCounterMode(display=False) as counter:
        separate_step([model], Execution(), frames, poses, eps)
    predicted = setting.batch * (setting.length - 1)
    flops = counter.get_total_flops() / predicted
    seconds = best_time(lambda: separate_step([model], execution, frames, poses, eps), repeats, device)
    fps = predicted / seconds
    line = (f"  - {setting.name}, batch {setting.batch} x {setting.length} frames: "
            f"{flops / 1e9:.3f} GFLOP per training frame, **{fps:.1f} frames/s = "
            f"{100 * fps * flops / peak:.0f}% of the roof** ({execution.describe()})")
    print(line, flush=True)
    return line


def pack_lines(setting: Setting, device: torch.device, packs: list[int], repeats: int) -> list[str]:
    execution = Execution.default_for(device, setting.dims[3], HEIGHT, WIDTH)
    predicted = setting.batch * (setting.length - 1)
    lines = [f"- {setting.name}, training frames/s summed over the members (separate: one after another with "
             f"the default execution; packed: one vmapped pass), speed-up, largest packed-vs-separate difference:"]
    for n in packs:
        frames, poses, eps = inputs(setting, n, device)
        alone = [execution.prepare(m) for m in members(setting, n, device)]
        packed = PackedModels(members(setting, n, device))
        separate_losses = separate_step(alone, execution, frames, poses, eps)
        packed_losses = packed_step(packed, frames, poses, eps)
        loss_diff = max(abs(a - b) / abs(a) for a, b in zip(separate_losses, packed_losses))
        grad_diff = max(((a - b).norm() / a.norm()).item() for a, b in zip(gradients(alone), gradients(packed.members)))
        separate_s = best_time(lambda: separate_step(alone, execution, frames, poses, eps), repeats, device)
        packed_s = best_time(lambda: packed_step(packed, frames, poses, eps), repeats, device)
        lines.append(f"  - pack {n}: separate {n * predicted / separate_s:.1f}, packed **{n * predicted / packed_s:.1f} "
                     f"frames/s** (x{separate_s / packed_s:.2f}); diff loss {loss_diff:.1e}, grads {grad_diff:.1e}")
        print(lines[-1], flush=True)
    return lines


def sweep_lines(study: str, packs: list[int], trials: int, device: torch.device) -> list[str]:
    """Trials per hour of `study` swept with each pack size, every trial trained to its end, and beside
    them two one-thread workers without packing (`harness sweep --workers 2`), the best on 2 CPU cores."""
    lines = [f"- `{study}` study swept end to end (one worker with all threads and `--pack N`, then two "
             f"one-thread workers with pack 1; {trials} trials, no pruner, SQLite + local MLflow store; first "
             f"trial start to last trial end):"]
    rates = {}
    for n in [*packs, "2 workers"]:
        spec = dataclasses.replace(load_study_spec(study), pack=1 if n == "2 workers" else n, n_trials=trials,
                                   pruner={"type": "none"})
        resolve_data_root(spec.data, HEIGHT, WIDTH)      # data generation outside the timing
        with tempfile.TemporaryDirectory() as tmp:
            stores = resolve_stores(Path(tmp))
            start = time.perf_counter()
            if n == "2 workers":
                sweep_with_workers(study, trials, 2, Path(tmp), device)
            else:
                run_sweep(spec, stores, WorkerOptions(device=device.type, echo=lambda _: None))
            wall = time.perf_counter() - start
            done = [t for t in optuna.load_study(study_name=spec.name, storage=stores.storage_url).get_trials()
                    if t.state == optuna.trial.TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        rates[n] = len(done) * 3600 / span
        what = "`--workers 2`, pack 1" if n == "2 workers" else f"pack {n}"
        lines.append(f"  - {what}: {len(done)} trials in {span:.1f} s = **{rates[n]:.0f} trials/h** "
                     f"(x{rates[n] / rates[packs[0]]:.2f} of pack {packs[0]}); wall {wall:.1f} s")
        print(lines[-1], flush=True)
    return lines


def sweep_with_workers(study: str, trials: int, workers: int, runs: Path, device: torch.device) -> None:
    """`harness sweep --workers N` on a copy of the study's spec with `trials` trials and no pruner."""
    spec = yaml.safe_load((STUDIES_DIR / f"{study}.yaml").read_text())
    spec.update(n_trials=trials, pruner={"type": "none"})
    path = runs / f"{study}.yaml"
    path.write_text(yaml.safe_dump(spec))
    subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--study", str(path), "--workers", str(workers),
                    "--runs-dir", str(runs), "--device", device.type], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    parser.add_argument("--packs", default="1,2,4,8", help="numbers of members to pack")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats after a warm-up call (best kept)")
    parser.add_argument("--sweep-trials", type=int, default=8, help="trials per pack size of the end-to-end smoke "
                                                                    "sweep (0: skip it)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    packs = [int(v) for v in args.packs.split(",")]
    peak = attainable_flops(device, torch.float32)
    lines = [f"- fp32 roof: {peak / 1e9:.0f} GFLOP/s (the best of a few large matmuls and 1x1 convolutions, "
             f"bench/model_speed.py); device {device.type}",
             "- one model's training step at each study's dims, the trainer's default execution:"]
    print("\n".join(lines), flush=True)
    settings = [Setting.of(study) for study in STUDIES]
    lines += [roof_line(setting, device, peak, args.repeats) for setting in settings]
    for setting in settings[:2]:
        lines += pack_lines(setting, device, packs, args.repeats)
    if args.sweep_trials:
        lines += sweep_lines("smoke", packs, args.sweep_trials, device)
    record("Packing: share of the fp32 roof by study dims, packed members against separate ones", lines)


if __name__ == "__main__":
    main()
