"""Scoring a model on the validation sequences: the autoregressive rollout from each sequence's frame 0,
its PSNR per frame (whole frame, and over the figure and the background where the data has masks),
and the baselines every model is drawn beside."""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import compiled
from .config import TrainConfig
from .cvae import VideoCVAE
from .data import DanceData, to_uint8, to_unit
from .execution import Execution
from .metrics import masked_psnr_per_frame, mse_per_frame, psnr_from_mse, psnr_per_frame
from .placement import shared_copy
from .records import REPEAT_FIRST_FRAME, UNTRAINED_MODEL, Curves
from .seeds import stream_seed


class Score(NamedTuple):
    curves: Curves                          # PSNR per frame, the mean over the sequences (regions with masks)
    first_rollout: torch.Tensor             # uint8 [T, 3, H, W], the first sequence's rollout, on the CPU
    mse: float                              # MSE over the predicted frames 1..T-1: the validation loss


class Validation:
    """The validation sequences of a run, kept on its device (one copy for every trainer of the process),
    and how a model is rolled out on them: in eval mode, with the run's own fixed noise seed (the same
    draws every epoch), z and 8-bit feedback as configured, each frame compiled as `compile` says."""

    def __init__(self, config: TrainConfig, data: DanceData, device: torch.device, execution: Execution):
        self.config, self.device, self.execution = config, device, execution
        images, poses, masks = data.val_runs(config.val_vi_len, config.val_max_sequences)
        self.images, self.poses = shared_copy(images, device), shared_copy(poses, device)
        self.masks = None if masks is None else shared_copy(masks, device)

    def rollout(self, model: VideoCVAE, first_frames: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(stream_seed(self.config.seed, "rollout"))
        was_training = model.training
        model.eval()
        try:
            with self.execution.autocast(self.device):
                return model.rollout(first_frames, poses, self.config.val_samples, generator,
                                     zero_z=self.config.rollout_z == "zero", quantize=self.config.rollout_quantize,
                                     frame_step=compiled.rollout_frame(model, self.execution.compile,
                                                                       self.device)).float()
        finally:
            model.train(was_training)

    def score(self, model: VideoCVAE, length: int | None = None) -> Score:
        """`model` rolled out over the first `length` frames (all by default) of every sequence at once."""
        frames = to_unit(self.images[:, :length], self.device)
        pred = self.rollout(model, frames[:, 0], to_unit(self.poses[:, :length], self.device))
        mse = mse_per_frame(pred, frames)
        curves = Curves.of(psnr_from_mse(mse).mean(dim=0).cpu(), self.region_psnr(pred, frames))
        return Score(curves, to_uint8(pred[0]).cpu(), float(mse[:, 1:].mean()))

    def region_psnr(self, pred: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """PSNR per frame [T] over the figure and over the background, by REGIONS name, of `pred` against
        the first T validation frames `frames` [S, T, 3, H, W]; a frame's mean over the sequences skips
        those where the region is empty. Empty without masks."""
        if self.masks is None:
            return {}
        mask = self.masks[:, :frames.shape[1]]
        return {name: curve.nanmean(dim=0).cpu() for name, curve in masked_psnr_per_frame(pred, frames, mask).items()}

    def baselines(self, untrained: VideoCVAE) -> dict[str, Curves]:
        """PSNR per frame of two references on the whole rollout: repeating frame 0, and the untrained
        model; by region too where the data has masks."""
        frames = to_unit(self.images, self.device)
        repeat = frames[:, :1].expand_as(frames)
        return {REPEAT_FIRST_FRAME: Curves.of(psnr_per_frame(repeat, frames).mean(dim=0).cpu(),
                                              self.region_psnr(repeat, frames)),
                UNTRAINED_MODEL: self.score(untrained).curves}

    def first_sequence(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first sequence's first `count` frames and poses, uint8 [count, 3, H, W] on the CPU."""
        return self.images[0, :count].cpu(), self.poses[0, :count].cpu()
