"""The three building blocks of the lab's CVAE (see DESIGN.md, "The model").

Every block keeps the spatial resolution: the model never down-samples.
"""
from __future__ import annotations

import torch
from torch import nn

# The lab leaves the slope of two LeakyReLUs unspecified (or passes `True`,
# which silently makes them the identity). We use PyTorch's default slope.
DEFAULT_SLOPE = 0.01


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


def conv3x3(in_ch: int, out_ch: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, groups=groups)


def skip(in_ch: int, out_ch: int) -> nn.Module:
    """Identity when the widths agree, else a 1x1 projection."""
    return nn.Identity() if in_ch == out_ch else conv1x1(in_ch, out_ch)


class Res(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(in_ch, out_ch),
            nn.LeakyReLU(DEFAULT_SLOPE),
            conv3x3(out_ch, out_ch),
            nn.LeakyReLU(DEFAULT_SLOPE),
        )
        self.skip = skip(in_ch, out_ch)

    @property
    def branch_output(self) -> nn.Conv2d:
        """The residual branch's last convolution (zero-initialised by the model)."""
        return self.body[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class FFN(nn.Module):
    """Gated 1x1 feed-forward: x + W2 (u * LeakyReLU_0.1(v)), [u, v] = W1 x."""

    def __init__(self, ch: int):
        super().__init__()
        self.expand = conv1x1(ch, 4 * ch)
        self.act = nn.LeakyReLU(0.1)
        self.project = conv1x1(2 * ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.expand(x).chunk(2, dim=1)
        return x + self.project(u * self.act(v))


class DW(nn.Module):
    """Depthwise-separable residual block followed by an FFN."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            conv1x1(in_ch, in_ch),
            nn.LeakyReLU(0.01),
            conv3x3(in_ch, in_ch, groups=in_ch),
            conv1x1(in_ch, out_ch),
        )
        self.skip = skip(in_ch, out_ch)
        self.ffn = FFN(out_ch)

    @property
    def branch_output(self) -> nn.Conv2d:
        return self.body[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.body(x) + self.skip(x))
