"""The filter features of `sparseseg.method.features.filter_features` as a torch module, so that a network reading them
can be run on the raw channels alone: what ``sparseseg export`` packages for bioimage.io tools, which know no
sparseseg.

`FilterStack` gives the same values as the numpy features (Gaussian with scipy's kernel and 'nearest' edges, Sobel
with 'reflect' edges, `numpy.gradient`'s differences, Hessian eigenvalues in decreasing order), to float rounding.
A tool that runs the package tile by tile computes them per tile, without the context sparseseg reads around each
block: within `sparseseg.method.features.HALO` voxels of a tile's edge they differ from sparseseg's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from sparseseg.method.features import SIGMAS, filter_ratio
from sparseseg.method.inputs import NetworkInputs
from sparseseg.method.network import UNet3D

#: scipy.ndimage.gaussian_filter's default reach, in standard deviations.
TRUNCATE = 4.0


def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernel of ``sigma`` (radius ``int(TRUNCATE * sigma + 0.5)``), summing to 1."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 * (x / sigma) ** 2)
    return phi / phi.sum()


def _along(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` (N, 1, Z, Y, X) correlated with a 1-D ``kernel`` along spatial ``axis`` (0..2), edges repeated."""
    radius = (kernel.numel() - 1) // 2
    if radius == 0:
        return x * kernel[0]
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = kernel.numel()
    return functional.conv3d(functional.pad(x, pad, mode="replicate"), kernel.view(shape))


def _part(x: torch.Tensor, dim: int, start: int | None, stop: int | None) -> torch.Tensor:
    """``x[start:stop]`` along ``dim``: slices relative to the ends, so that a traced module takes any size."""
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop)
    return x[tuple(index)]


def _gradient(x: torch.Tensor, axis: int, step: float) -> torch.Tensor:
    """`numpy.gradient` of ``x`` (N, 1, Z, Y, X) along spatial ``axis``: central differences, one-sided at the edges."""
    d = 2 + axis
    inner = (_part(x, d, 2, None) - _part(x, d, None, -2)) / (2 * step)
    first = (_part(x, d, 1, 2) - _part(x, d, 0, 1)) / step
    last = (_part(x, d, -1, None) - _part(x, d, -2, -1)) / step
    return torch.cat([first, inner, last], dim=d)


class FilterStack(nn.Module):
    """Filter features (N, F, Z, Y, X) of a normalised (N, C, Z, Y, X) image, in the order of `filter_features`."""

    def __init__(self, spacing: Sequence[float] | None = None):
        super().__init__()
        self.ratio = filter_ratio(spacing)
        for s, sigma in enumerate(SIGMAS):
            for a, r in enumerate(self.ratio):
                kernel = torch.as_tensor(gaussian_kernel(sigma / r), dtype=torch.float32)
                self.register_buffer(f"gauss_{s}_{a}", kernel, persistent=False)
        self.register_buffer("sobel_edge", torch.tensor([-1.0, 0.0, 1.0]), persistent=False)
        self.register_buffer("sobel_smooth", torch.tensor([0.25, 0.5, 0.25]), persistent=False)

    def _sobel(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        for a in range(3):
            x = _along(x, self.sobel_edge if a == axis else self.sobel_smooth, a)
        return x

    def _one_scale(self, x: torch.Tensor, s: int) -> list[torch.Tensor]:
        smooth = x
        for a in range(3):
            smooth = _along(smooth, getattr(self, f"gauss_{s}_{a}"), a)
        edges = sum((self._sobel(smooth, a) / r) ** 2 for a, r in enumerate(self.ratio))
        gradient = [_gradient(smooth, a, r) for a, r in enumerate(self.ratio)]
        hessian = {
            (a, b): _gradient(gradient[a], b, self.ratio[b]) for a, b in combinations_with_replacement(range(3), 2)
        }
        rows = [torch.cat([hessian[min(a, b), max(a, b)] for b in range(3)], dim=1) for a in range(3)]
        matrices = torch.stack(rows, dim=1).permute(0, 3, 4, 5, 1, 2)  # (N, Z, Y, X, 3, 3)
        eigenvalues = torch.linalg.eigvalsh(matrices).flip(-1).permute(0, 4, 1, 2, 3)  # decreasing, (N, 3, Z, Y, X)
        return [smooth, torch.sqrt(edges) / np.sqrt(3.0), eigenvalues]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        parts = []
        for c in range(image.shape[1]):
            for s in range(len(SIGMAS)):
                parts += self._one_scale(image[:, c : c + 1], s)
        return torch.cat(parts, dim=1)


class FilteredUNet3D(UNet3D):
    """A `sparseseg.method.network.UNet3D` that reads the normalised raw channels and their normalised filter features
    (`sparseseg.method.inputs`), run on the raw channels alone: the features are computed inside.

    Its weights are those of the U-Net it wraps, under the same names (its own tensors are not saved), so one
    ``weights.pt`` serves both. ``in_channels`` are the raw channels; ``spacing`` and ``stats`` are those of
    `NetworkInputs`.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        base: int,
        pools: Sequence[Sequence[int]],
        spacing: Sequence[float] | None,
        stats: Sequence[Sequence[float]],
    ):
        inputs = NetworkInputs(in_channels, None if spacing is None else tuple(spacing), np.asarray(stats, float))
        super().__init__(inputs.count, n_classes, base, pools)
        self.filters = FilterStack(inputs.spacing)
        lo, hi, mean, std = (torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1, 1) for v in inputs.stats.T)
        for name, value in (("lo", lo), ("hi", hi), ("mean", mean), ("std", torch.where(std > 0, std, 1.0))):
            self.register_buffer(name, value, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = (torch.clamp(self.filters(image), self.lo, self.hi) - self.mean) / self.std
        return super().forward(torch.cat([image, features], dim=1))


def architecture(network: UNet3D, inputs: NetworkInputs) -> tuple[str, dict]:
    """The class that runs ``network`` on the raw channels (its name in this module, or ``UNet3D``) and its keyword
    arguments, as bioimage.io's ``pytorch_state_dict`` architecture names them."""
    kwargs = {
        "in_channels": inputs.channels if inputs.filters else network.encoders[0].block[0].in_channels,
        "n_classes": network.head.out_channels,
        "base": network.encoders[0].block[0].out_channels,
        "pools": [list(p) for p in network.pools],
    }
    if not inputs.filters:
        return "UNet3D", kwargs
    spacing = None if inputs.spacing is None else list(inputs.spacing)
    return "FilteredUNet3D", kwargs | {"spacing": spacing, "stats": inputs.stats.tolist()}


def runnable_on_raw(network: UNet3D, inputs: NetworkInputs) -> UNet3D:
    """The network as a module of the normalised raw channels: itself, or a `FilteredUNet3D` with its weights."""
    if not inputs.filters:
        return network
    _, kwargs = architecture(network, inputs)
    filtered = FilteredUNet3D(**kwargs)
    filtered.load_state_dict(network.state_dict())
    return filtered.to(next(network.parameters()).device).train(network.training)
