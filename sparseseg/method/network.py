"""The 3D U-Net of Cicek et al. (2016), built from small blocks.

Analysis path: per level two 3x3x3 convolutions, each followed by batch norm and ReLU, the
second one doubling the channels, then 2x2x2 max pooling. Synthesis path: 2x2x2
up-convolution, concatenation with the same-level analysis features, two 3x3x3 conv + BN +
ReLU. A 1x1x1 convolution gives the class scores. With ``base=32``, 3 input channels and
3 classes this is the paper's network, 19,069,955 parameters.

Deviation from the paper: convolutions are padded, so the output covers the whole input
(the paper uses valid convolutions and an output smaller than its input). For anisotropic
voxels a level may pool with (1, 2, 2) instead of (2, 2, 2): see `sparseseg.method.planning.pooling_kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparseseg.method.planning import Kernel, size_multiple


class ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by batch norm and ReLU.

    As in the paper's Caffe model, the convolutions carry a bias and batch norm has no
    learnable scale or shift; this is what gives its count of 19,069,955 parameters.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__(
            nn.Conv3d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm3d(mid_channels, affine=False),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_channels, out_channels, 3, padding=1),
            nn.BatchNorm3d(out_channels, affine=False),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """One analysis level: optional max pooling, then a conv block that doubles the channels."""

    def __init__(self, in_channels: int, channels: int, pool: Kernel | None):
        super().__init__()
        self.pool = nn.MaxPool3d(pool, stride=pool) if pool else nn.Identity()
        self.block = ConvBlock(in_channels, channels, 2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.pool(x))


class Decoder(nn.Module):
    """One synthesis level: up-convolution, concatenation with the skip features, conv block."""

    def __init__(self, in_channels: int, skip_channels: int, pool: Kernel):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, in_channels, pool, stride=pool, bias=False)
        self.block = ConvBlock(in_channels + skip_channels, skip_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet3D(nn.Module):
    """3D U-Net with ``len(pools)`` resolution steps.

    Parameters
    ----------
    in_channels : int
        Image channels.
    n_classes : int
        Classes scored by the final 1x1x1 convolution.
    base : int
        Channels of the first convolution (the paper: 32). Level i ends with ``base * 2**(i+1)``.
    pools : sequence of (int, int, int)
        Pooling kernel of each step, e.g. from `sparseseg.method.planning.pooling_kernels`. The paper: three times (2,
        2, 2).
    """

    def __init__(self, in_channels: int, n_classes: int, base: int = 32, pools: Sequence[Kernel] = ((2, 2, 2),) * 3):
        super().__init__()
        if in_channels < 1 or n_classes < 2 or base < 1:
            raise ValueError(
                f"need in_channels >= 1, n_classes >= 2, base >= 1; got {in_channels}, {n_classes}, {base}"
            )
        self.pools = [tuple(p) for p in pools]
        widths = [base * 2**i for i in range(len(self.pools) + 1)]
        self.encoders = nn.ModuleList(
            Encoder(in_channels if i == 0 else 2 * widths[i - 1], widths[i], self.pools[i - 1] if i else None)
            for i in range(len(widths))
        )
        self.decoders = nn.ModuleList(
            Decoder(2 * widths[i + 1], 2 * widths[i], self.pools[i]) for i in reversed(range(len(self.pools)))
        )
        self.head = nn.Conv3d(2 * widths[0], n_classes, 1)

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        return size_multiple(self.pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1])):
            x = decoder(x, skip)
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
