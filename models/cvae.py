"""The conditional VAE for next-frame prediction (DESIGN.md, "The model").

Per time step t: the posterior q(z_t | x_t, p_t) sees the CURRENT ground-truth
frame and pose; the decoder sees the PREVIOUS frame, the current pose and z_t.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import DW, FFN, DEFAULT_SLOPE, Res, conv1x1, conv3x3
from .config import TrainConfig


class RGB_Encoder(nn.Module):
    """Frame 3xHxW -> features F x H x W."""

    def __init__(self, f_dim: int):
        super().__init__()
        f = f_dim
        self.net = nn.Sequential(
            Res(3, f // 8), DW(f // 8, f // 8),
            Res(f // 8, f // 4), DW(f // 4, f // 4),
            Res(f // 4, f // 2), DW(f // 2, f // 2),
            conv3x3(f // 2, f),
        )

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.net(frame)


class Label_Encoder(nn.Module):
    """Pose frame 3xHxW -> features L x H x W."""

    def __init__(self, l_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, l_dim // 2, kernel_size=7),
            nn.BatchNorm2d(l_dim // 2),
            nn.LeakyReLU(DEFAULT_SLOPE),
            Res(l_dim // 2, l_dim),
        )

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.net(pose)


class Gaussian_Predictor(nn.Module):
    """Frame and pose features -> (z, mu, logvar), each N x H x W."""

    def __init__(self, in_ch: int, n_dim: int):
        super().__init__()
        n = n_dim
        self.net = nn.Sequential(
            Res(in_ch, n // 4), DW(n // 4, n // 4),
            Res(n // 4, n // 2), DW(n // 2, n // 2),
            Res(n // 2, n),
            nn.LeakyReLU(DEFAULT_SLOPE),
            conv1x1(n, 2 * n),
        )

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor,
                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(torch.cat([frame_feat, pose_feat], dim=1)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * eps
        return z, mu, logvar


class Decoder_Fusion(nn.Module):
    """(previous-frame features, pose features, z) -> D x H x W."""

    def __init__(self, in_ch: int, d_out_dim: int):
        super().__init__()
        c, d = in_ch, d_out_dim
        self.net = nn.Sequential(
            DW(c, c), Res(c, c // 4),
            DW(c // 4, c // 2), Res(c // 2, c // 2),
            DW(c // 2, d // 2), conv1x1(d // 2, d),
        )

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([frame_feat, pose_feat, z], dim=1))


class Generator(nn.Module):
    """D x H x W -> predicted frame 3 x H x W in [0, 1]."""

    def __init__(self, d_in: int):
        super().__init__()
        d = d_in
        self.net = nn.Sequential(
            DW(d, d), Res(d, d // 2),
            DW(d // 2, d // 2), Res(d // 2, d // 4),
            DW(d // 4, d // 4), Res(d // 4, d // 8),
            DW(d // 8, d // 8), conv1x1(d // 8, 3),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(model: nn.Module) -> None:
    """Start every residual block as its skip path.

    Convolutions get variance-preserving weights (std 1/sqrt(fan_in)) and zero
    biases, and the last convolution of each residual branch starts at zero,
    so at initialisation the network is a chain of well-scaled projections
    instead of a deep stack that shrinks its input. With PyTorch's default
    init the model first has to learn to pass the previous frame through at
    all; this init reaches a given training PSNR in several times fewer steps
    (bench/init_speed.py). The architecture is unchanged.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            nn.init.normal_(module.weight, std=fan_in ** -0.5)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, (Res, DW)):
            nn.init.zeros_(module.branch_output.weight)
        elif isinstance(module, FFN):
            nn.init.zeros_(module.project.weight)


def _fold(x: torch.Tensor) -> torch.Tensor:
    """[B, T, C, H, W] -> [B*T, C, H, W]."""
    return x.reshape(-1, *x.shape[2:])


def _in_passes(module, size: int, *inputs: torch.Tensor):
    """module(*inputs) over dim 0 in slices of at most `size`, outputs concatenated (tuples element-wise)."""
    if inputs[0].shape[0] <= size:
        return module(*inputs)
    outputs = [module(*(x[i:i + size] for x in inputs)) for i in range(0, inputs[0].shape[0], size)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


class VideoCVAE(nn.Module):
    """The five modules plus the two ways of running them: training and rollout."""

    def __init__(self, f_dim: int = 128, l_dim: int = 32, n_dim: int = 12, d_out_dim: int = 192):
        super().__init__()
        self.n_dim = n_dim
        self.frame_encoder = RGB_Encoder(f_dim)
        self.label_encoder = Label_Encoder(l_dim)
        self.gaussian_predictor = Gaussian_Predictor(f_dim + l_dim, n_dim)
        self.decoder_fusion = Decoder_Fusion(f_dim + l_dim + n_dim, d_out_dim)
        self.generator = Generator(d_out_dim)
        init_weights(self)

    @classmethod
    def from_config(cls, config: TrainConfig) -> "VideoCVAE":
        return cls(config.f_dim, config.l_dim, config.n_dim, config.d_out_dim)

    def decode(self, prev_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.generator(self.decoder_fusion(prev_feat, pose_feat, z))

    def reconstruct(self, frames: torch.Tensor, poses: torch.Tensor, teacher_forcing: bool,
                    generator: torch.Generator | None = None,
                    frames_per_pass: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass over sequences [B, T, 3, H, W].

        Returns the predictions of frames 1..T-1, [B, T-1, 3, H, W], and the KL
        of each step, [T-1] (summed over latent elements, divided by B).
        Ground-truth frames and poses are encoded once, batched over time;
        with teacher forcing the whole decode is batched over time too, in
        passes of at most `frames_per_pass` frames (None: all at once). On a
        CPU small passes win: full-resolution activations of many frames at
        once overflow the caches (2x slower at the default dims).
        """
        b, t = frames.shape[:2]
        chunk = frames_per_pass or b * t
        frame_feat = _in_passes(self.frame_encoder, chunk, _fold(frames)).unflatten(0, (b, t))
        # Poses in one pass: the label encoder's batch norm must see the whole batch.
        pose_feat = self.label_encoder(_fold(poses)).unflatten(0, (b, t))
        eps = torch.randn((b * (t - 1), self.n_dim, *frames.shape[3:]), generator=generator,
                          device=frames.device, dtype=frames.dtype)
        z, mu, logvar = _in_passes(self.gaussian_predictor, chunk, _fold(frame_feat[:, 1:]),
                                   _fold(pose_feat[:, 1:]), eps)
        # KL(q || N(0, I)) per element; the lab sums it over the latent and divides by B.
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).unflatten(0, (b, t - 1))
        kl_per_step = kl.sum(dim=(0, 2, 3, 4)) / b
        z = z.unflatten(0, (b, t - 1))

        if teacher_forcing:
            # Time-major order so each pass holds whole steps of the batch.
            def fold_time(x: torch.Tensor) -> torch.Tensor:
                return _fold(x.transpose(0, 1))
            pred = _in_passes(self.decode, chunk, fold_time(frame_feat[:, :-1]), fold_time(pose_feat[:, 1:]),
                              fold_time(z))
            return pred.unflatten(0, (t - 1, b)).transpose(0, 1), kl_per_step

        preds = []
        prev_feat = frame_feat[:, 0]
        for step in range(1, t):
            pred = self.decode(prev_feat, pose_feat[:, step], z[:, step - 1])
            preds.append(pred)
            if step < t - 1:
                prev_feat = self.frame_encoder(pred)
        return torch.stack(preds, dim=1), kl_per_step

    @torch.no_grad()
    def rollout(self, first_frame: torch.Tensor, poses: torch.Tensor, samples: int = 1,
                generator: torch.Generator | None = None, pose_chunk: int = 64) -> torch.Tensor:
        """Autoregressive generation from the first frame [B, 3, H, W] through poses [B, T, 3, H, W].

        z ~ N(0, I); each step decodes `samples` draws in one batched forward
        and feeds their mean back as the next previous frame. Returns frames
        [B, T, 3, H, W] whose frame 0 is `first_frame`.
        """
        b, t = poses.shape[:2]
        k = samples
        out = torch.empty_like(poses)
        out[:, 0] = first_frame
        prev = first_frame
        z_shape = (k * b, self.n_dim, *poses.shape[3:])
        for start in range(1, t, pose_chunk):
            stop = min(start + pose_chunk, t)
            # Poses are known in advance: encode a chunk of them batched over time.
            pose_feat = self.label_encoder(_fold(poses[:, start:stop])).unflatten(0, (b, stop - start))
            for step in range(start, stop):
                prev_feat = self.frame_encoder(prev).repeat(k, 1, 1, 1)
                z = torch.randn(z_shape, generator=generator, device=poses.device, dtype=poses.dtype)
                pred = self.decode(prev_feat, pose_feat[:, step - start].repeat(k, 1, 1, 1), z)
                prev = pred.unflatten(0, (k, b)).mean(dim=0)
                out[:, step] = prev
        return out
