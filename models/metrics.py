"""Frame-quality metrics."""
from __future__ import annotations

import torch

from .records import REGIONS   # the parts of a frame scored apart where the data has masks: figure, rest

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


def masked_mse_per_frame(prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE of each frame over the pixels where `mask` is set ("figure") and over the rest ("background").

    prediction, truth: [..., C, H, W]; mask: [..., 1, H, W], nonzero on the figure (0/1 or 0/255),
    the mask of the ground-truth frame. Each MSE is the squared error summed over its pixels and
    channels, divided by C times its pixel count; NaN where the region has no pixels. The result
    has the leading shape, by REGIONS name.
    """
    squared = (prediction.float() - truth.float()).pow(2)
    figure = (mask != 0).float()
    channels = squared.shape[-3]
    mse = {}
    for name, weight in zip(REGIONS, (figure, 1 - figure)):
        pixels = weight.sum(dim=(-3, -2, -1)) * channels
        mse[name] = (squared * weight).sum(dim=(-3, -2, -1)) / pixels   # 0 / 0 = NaN for an empty region
    return mse


def masked_psnr_per_frame(prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR in dB of each frame over the figure and over the background (see `masked_mse_per_frame`),
    by REGIONS name; NaN for a frame whose region is empty."""
    return {name: psnr_from_mse(mse) for name, mse in masked_mse_per_frame(prediction, truth, mask).items()}


def mean_rollout_psnr(per_frame: torch.Tensor, skip_nan: bool = False) -> float:
    """The headline number: mean PSNR over the predicted frames 1..T-1 (frame 0 is given).

    `skip_nan` leaves out frames without a value (a figure PSNR where the figure is out of frame);
    the whole-frame PSNR keeps it off, so that a NaN prediction shows as a NaN mean."""
    predicted = per_frame[..., 1:]
    return float(predicted.nanmean() if skip_nan else predicted.mean())
