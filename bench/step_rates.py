"""Training and rollout speed of one model or a pack of them, eager or compiled, under a run's settings:
shared by bench/compile_speed.py (the CPU) and bench/gpu_check.py (a GPU).

A training step here is the trainer's pass, forward and backward (teacher forced or free-running), of
one model (VideoCVAE.reconstruct) or of a pack (models.packing, one vmapped pass); "compiled" is what
TrainConfig `compile: step` runs (models.compiled). A rollout is VideoCVAE.rollout of one sequence
with K = 1, its frames compiled as with `compile: rollout` (a CUDA graph on CUDA).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from models import compiled
from models.config import TrainConfig
from models.cvae import VideoCVAE, initial_model
from models.execution import Execution
from models.packing import PackedModels


@dataclass(frozen=True)
class Rate:
    frames_per_second: float
    first_seconds: float              # the first call, which compiles
    peak_bytes: int | None = None     # CUDA: the most memory allocated during the calls


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float, int | None]:
    """(first call's seconds, best of `repeats` further calls' seconds, CUDA peak bytes)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return first, best, peak


def members(config: TrainConfig, count: int, device: torch.device) -> list[VideoCVAE]:
    """`count` models of seeds 0, 1, ..., moved away from their init (whose zero residual branches would
    make a residual model the identity, and compiled and eager trivially equal), on `device`."""
    execution = Execution.for_run(config, device)
    models = []
    for seed in range(count):
        model = initial_model(config.replace(seed=seed))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        models.append(execution.prepare(model.to(device)))
    return models


def training_rate(config: TrainConfig, pack: int, forced: bool, compile: bool, device: torch.device,
                  repeats: int = 3) -> tuple[Rate, float]:
    """The training step's speed for `pack` members, and its loss (to compare eager and compiled)."""
    execution = Execution.for_run(config, device)
    models = members(config, pack, device)
    shape = (pack, config.batch_size, config.train_vi_len, 3, config.height, config.width)
    generator = torch.Generator(device=device).manual_seed(0)
    frames = torch.rand(shape, generator=generator, device=device)
    poses = torch.rand(shape, generator=generator, device=device)
    eps = torch.stack([model.latent_noise(frames[0], generator) for model in models])
    if pack == 1:
        model = models[0]
        forward = torch.compile(model.reconstruct) if compile else model.reconstruct

        def losses() -> torch.Tensor:
            pred, kl = forward(frames[0], poses[0], forced, frames_per_pass=execution.frames_per_pass,
                               reference=frames[0, :, 0], eps=eps[0])
            return (pred.float() - frames[0, :, 1:]).pow(2).mean() + 1e-3 * kl.float().sum()
    else:
        packed = PackedModels(models)
        forward = torch.compile(packed.reconstruct) if compile else packed.reconstruct

        def losses() -> torch.Tensor:
            pred, kl = forward(frames, poses, eps, forced, reference=frames[:, :, 0],
                               frames_per_pass=execution.frames_per_pass)
            return ((pred.float() - frames[:, :, 1:]).pow(2).mean(dim=(1, 2, 3, 4, 5)) + 1e-3 * kl.float().sum(1)).sum()

    loss = torch.zeros((), device=device)

    def step() -> None:
        nonlocal loss
        for model in models:
            model.zero_grad(set_to_none=True)
        with execution.autocast(device):
            loss = losses()
        loss.backward()

    with execution.settings(device):
        first, best, peak = timed(step, device, repeats)
    return Rate(pack * config.batch_size * config.train_vi_len / best, first, peak), float(loss.detach())


def rollout_rate(config: TrainConfig, length: int, compile: bool, device: torch.device,
                 repeats: int = 1) -> tuple[Rate, torch.Tensor]:
    """One sequence's `length`-frame rollout (K = 1): its speed, and its frames."""
    execution = Execution.for_run(config, device)
    model = members(config, 1, device)[0].eval()
    generator = torch.Generator(device=device).manual_seed(0)
    first = torch.rand(1, 3, config.height, config.width, generator=generator, device=device)
    poses = torch.rand(1, length, 3, config.height, config.width, generator=generator, device=device)
    frame_step = compiled.rollout_frame(model, "rollout" if compile else "off", device)
    out = first

    def roll() -> None:
        nonlocal out
        with execution.autocast(device):
            out = model.rollout(first, poses, 1, torch.Generator(device=device).manual_seed(1),
                                frame_step=frame_step)

    with execution.settings(device):
        first_seconds, best, peak = timed(roll, device, repeats)
    return Rate((length - 1) / best, first_seconds, peak), out.float().cpu()
