"""Frame-quality metrics."""
from __future__ import annotations

import torch

# A perfect frame has MSE 0 and infinite PSNR; cap it so means stay finite.
MIN_MSE = 1e-10


def psnr_per_frame(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame, data range 1.0: 10 log10(1 / MSE).

    Inputs are [..., C, H, W] in [0, 1]; the result has the leading shape.
    """
    mse = (prediction.float() - truth.float()).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MIN_MSE))


def mean_rollout_psnr(per_frame: torch.Tensor) -> float:
    """The headline number: mean PSNR over the predicted frames 1..T-1 (frame 0 is given)."""
    return float(per_frame[..., 1:].mean())
