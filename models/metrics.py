"""Frame-quality metrics."""
from __future__ import annotations

import torch

# A perfect frame has MSE 0 and infinite PSNR; cap it so means stay finite.
MIN_MSE = 1e-10


def mse_per_frame(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each frame; inputs are [..., C, H, W], the result has the leading shape."""
    return (prediction.float() - truth.float()).pow(2).mean(dim=(-3, -2, -1))


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB, data range 1.0: 10 log10(1 / MSE)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MIN_MSE))


def psnr_per_frame(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame of [..., C, H, W] inputs in [0, 1]; the result has the leading shape."""
    return psnr_from_mse(mse_per_frame(prediction, truth))


def mean_rollout_psnr(per_frame: torch.Tensor) -> float:
    """The headline number: mean PSNR over the predicted frames 1..T-1 (frame 0 is given)."""
    return float(per_frame[..., 1:].mean())
