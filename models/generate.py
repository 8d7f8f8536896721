"""The lab's test protocol: roll out each pose sequence from its given first frame."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .cvae import VideoCVAE
from .data import TestSequence, to_uint8, to_unit
from .metrics import masked_psnr_per_frame, psnr_per_frame


@dataclass
class Generated:
    index: int
    frames: torch.Tensor                 # uint8 [T, 3, H, W]; frame 0 is the given frame
    psnr: torch.Tensor | None            # [T'] per frame, where ground truth exists
    # [T'] per frame over the figure and the background (metrics.REGIONS), where masks exist too
    region_psnr: dict[str, torch.Tensor] = field(default_factory=dict)


class RepeatFirstFrame:
    """The baseline every model must beat: each frame of the rollout is the given first frame."""

    def eval(self) -> "RepeatFirstFrame":
        return self

    def rollout(self, first_frame: torch.Tensor, poses: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return first_frame[:, None].expand_as(poses).clone()


def untrained_model(config: TrainConfig, device: torch.device | str = "cpu") -> VideoCVAE:
    """The model a training run of `config` starts from (same seed, so the same weights): a baseline."""
    torch.manual_seed(config.seed)
    return VideoCVAE.from_config(config).to(device)


def rollout_length(seq: TestSequence, length: int | None) -> int:
    """Frames a rollout of `seq` has: its poses, or the first `length` of them."""
    return len(seq.labels) if length is None else min(length, len(seq.labels))


def generate_sequences(model: VideoCVAE | RepeatFirstFrame, sequences: list[TestSequence], samples: int = 1, seed: int = 0,
                       length: int | None = None, device: torch.device | str = "cpu",
                       zero_z: bool = False, quantize: bool = False) -> list[Generated]:
    """Roll out every sequence (sequences of equal length together, in one batch);
    `zero_z` and `quantize` as in `VideoCVAE.rollout`."""
    results: dict[int, Generated] = {}
    by_length: dict[int, list[TestSequence]] = {}
    for seq in sequences:
        count = rollout_length(seq, length)
        by_length.setdefault(count, []).append(seq)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    for count, group in by_length.items():
        first = to_unit(torch.stack([seq.first_frame for seq in group]), device)
        poses = to_unit(torch.stack([seq.labels[:count] for seq in group]), device)
        pred = model.rollout(first, poses, samples, generator, zero_z=zero_z, quantize=quantize)
        frames = to_uint8(pred).cpu()
        for seq, seq_frames, seq_pred in zip(group, frames, pred.cpu()):
            psnr, region_psnr = None, {}
            if seq.truth is not None:
                shared = min(count, len(seq.truth))
                truth = to_unit(seq.truth[:shared])
                psnr = psnr_per_frame(seq_pred[:shared], truth)
                if seq.masks is not None:
                    region_psnr = masked_psnr_per_frame(seq_pred[:shared], truth, seq.masks[:shared])
            results[seq.index] = Generated(seq.index, seq_frames, psnr, region_psnr)
    return [results[seq.index] for seq in sequences]


def write_submission_csv(generated: list[Generated], path: Path) -> None:
    """Header, an `id` column counting rows from 0, then each frame's values
    flattened in C, H, W order as integers round(255 x); sequences one after another."""
    frames = torch.cat([g.frames for g in generated]).reshape(-1, np.prod(generated[0].frames.shape[1:]))
    values = frames.numpy().astype(np.int64)
    ids = np.arange(len(values))[:, None]
    header = "id," + ",".join(str(i) for i in range(values.shape[1]))
    np.savetxt(path, np.hstack([ids, values]), fmt="%d", delimiter=",", header=header, comments="")
