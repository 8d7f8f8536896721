"""Training-time changes to a batch of sequences [B, T, 3, H, W]: pure functions of the frames and a
random generator, drawn per sequence so that each stays one consistent video."""
from __future__ import annotations

import torch


def recolour(frames: torch.Tensor, generator: torch.Generator, share: float = 1.0) -> torch.Tensor:
    """Each sequence's colours remapped (`colour_augment`): channel c becomes offset + scale * x of a
    random channel, scale in +-[0.5, 1] and the offset keeping the result in [0, 1], so nothing is
    clipped. One map per sequence, the same for all its frames: it stays a video, of a dancer the data
    set did not have. With `share` < 1 each sequence is remapped with that probability and otherwise
    kept as it is (drawn after the maps, so share 1 draws what it always drew)."""
    b = frames.shape[0]
    shape = (b, 1, 3, 1, 1)
    draw = lambda: torch.rand(shape, generator=generator, device=frames.device)    # noqa: E731
    magnitude = 0.5 + 0.5 * draw()
    sign = torch.where(draw() < 0.5, -1.0, 1.0)
    offset = (1 - magnitude) * draw() + (sign < 0) * magnitude      # the image of [0, 1] stays inside it
    order = torch.argsort(torch.rand((b, 3), generator=generator, device=frames.device), dim=1)
    shuffled = torch.take_along_dim(frames, order[:, None, :, None, None], dim=2)
    recoloured = offset + sign * magnitude * shuffled
    if share >= 1:
        return recoloured
    chosen = torch.rand((b, 1, 1, 1, 1), generator=generator, device=frames.device) < share
    return torch.where(chosen, recoloured, frames)


def add_noise(frames: torch.Tensor, max_std: float, generator: torch.Generator) -> torch.Tensor:
    """`frames` [B, T, ...] plus Gaussian noise of a std drawn per sequence in [0, max_std], clamped to [0, 1].

    In a rollout the model sees its own imperfect frames; trained only on clean ones, its errors
    compound (GameNGen, Valevski et al. 2024, found conditioning-frame noise essential for stable
    long rollouts)."""
    std = max_std * torch.rand((frames.shape[0], *[1] * (frames.dim() - 1)), generator=generator,
                               device=frames.device)
    noise = torch.randn(frames.shape, generator=generator, device=frames.device)
    return (frames + std * noise).clamp(0, 1)
