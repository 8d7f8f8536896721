"""The lab's test protocol: roll out each pose sequence from its given first frame."""
from __future__ import annotations

import time
from typing import Callable

import torch

from . import compiled
from .config import TrainConfig
from .cvae import VideoCVAE, initial_model
from .data import TestSequence, to_uint8, to_unit
from .execution import Execution
from .metrics import masked_psnr_per_frame, psnr_per_frame
from .records import MODEL, REPEAT_FIRST_FRAME, UNTRAINED_MODEL, Generated


class RepeatFirstFrame:
    """The baseline every model must beat: each frame of the rollout is the given first frame."""

    def eval(self) -> "RepeatFirstFrame":
        return self

    def rollout(self, first_frame: torch.Tensor, poses: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return first_frame[:, None].expand_as(poses).clone()


def untrained_model(config: TrainConfig, device: torch.device | str = "cpu") -> VideoCVAE:
    """The model a training run of `config` starts from (same seed, so the same weights): a baseline."""
    return initial_model(config).to(device)


def rollout_length(seq: TestSequence, length: int | None) -> int:
    """Frames a rollout of `seq` has: its poses, or the first `length` of them."""
    return len(seq.labels) if length is None else min(length, len(seq.labels))


def generate_sequences(model: VideoCVAE | RepeatFirstFrame, sequences: list[TestSequence], samples: int = 1, seed: int = 0,
                       length: int | None = None, device: torch.device | str = "cpu",
                       zero_z: bool = False, quantize: bool = False, compile: str = "off") -> list[Generated]:
    """Roll out every sequence (sequences of equal length together, in one batch);
    `zero_z` and `quantize` as in `VideoCVAE.rollout`, each frame compiled as `compile` says
    (models.compiled)."""
    results: dict[int, Generated] = {}
    by_length: dict[int, list[TestSequence]] = {}
    for seq in sequences:
        count = rollout_length(seq, length)
        by_length.setdefault(count, []).append(seq)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    frame_step = compiled.rollout_frame(model, compile, torch.device(device)) if isinstance(model, VideoCVAE) else None
    for count, group in by_length.items():
        first = to_unit(torch.stack([seq.first_frame for seq in group]), device)
        poses = to_unit(torch.stack([seq.labels[:count] for seq in group]), device)
        pred = model.rollout(first, poses, samples, generator, zero_z=zero_z, quantize=quantize,
                             frame_step=frame_step).float()
        frames = to_uint8(pred).cpu()
        for seq, seq_frames, seq_pred in zip(group, frames, pred.cpu()):
            psnr, region_psnr = None, {}
            if seq.truth is not None:
                shared = min(count, len(seq.truth))
                truth = to_unit(seq.truth[:shared])
                psnr = psnr_per_frame(seq_pred[:shared], truth).numpy()
                if seq.masks is not None:
                    region_psnr = {name: curve.numpy() for name, curve in
                                   masked_psnr_per_frame(seq_pred[:shared], truth, seq.masks[:shared]).items()}
            shown_truth = None if seq.truth is None else seq.truth[:count].numpy()
            results[seq.index] = Generated(seq.index, seq_frames.numpy(), seq.labels[:count].numpy(), shown_truth,
                                           psnr, region_psnr)
    return [results[seq.index] for seq in sequences]


def rollouts_with_baselines(model: VideoCVAE, config: TrainConfig, sequences: list[TestSequence], *,
                            samples: int, seed: int, length: int | None, device: torch.device,
                            progress: Callable[[str], None]) -> dict[str, list[Generated]]:
    """The model's rollout of every sequence and, where ground truth exists, the baselines' (repeating
    the first frame, the untrained model) on the same sequences, by name ("model" first); in the
    run's precision, determinism and compilation, as its validation rolled out."""
    execution = Execution.for_run(config, device)
    rollout = {"samples": samples, "seed": seed, "length": length, "device": device,
               "zero_z": config.rollout_z == "zero", "quantize": config.rollout_quantize,
               "compile": config.compile}
    frames = sum(rollout_length(seq, length) for seq in sequences)

    def timed(name: str, source: VideoCVAE | RepeatFirstFrame) -> list[Generated]:
        # A 630-frame rollout takes about a minute on a CPU: say what is running and how long it took.
        progress(f"{name}: rolling out {frames} frames ...")
        started = time.perf_counter()
        with execution.settings(device), execution.autocast(device):
            results = generate_sequences(source, sequences, **rollout)
        progress(f"{name}: done in {time.perf_counter() - started:.1f}s")
        return results

    runs = {MODEL: timed(MODEL, model)}
    if any(gen.psnr is not None for gen in runs[MODEL]):
        runs[REPEAT_FIRST_FRAME] = timed(f"baseline {REPEAT_FIRST_FRAME}", RepeatFirstFrame())
        runs[UNTRAINED_MODEL] = timed(f"baseline {UNTRAINED_MODEL}", untrained_model(config, device))
    return runs
