"""Sliding-window tiling and Gaussian blending weights, as small pure functions (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tile_step(patch: int, overlap: float) -> int:
    """The longest step between neighbouring patches of length ``patch`` that overlap by about ``overlap`` (at least
    1)."""
    return max(1, int(patch * (1 - overlap)))


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of patches of length ``patch`` that cover ``0..size`` with about ``overlap`` overlap.

    The first patch starts at 0 and the last ends at ``size``; the others are spread evenly.
    """
    if patch < 1 or size < patch:
        raise ValueError(f"need 1 <= patch <= size, got patch={patch}, size={size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if size == patch:
        return [0]
    step = tile_step(patch, overlap)
    n = int(np.ceil((size - patch) / step)) + 1
    return [int(round(v)) for v in np.linspace(0, size - patch, n)]


def tile_slices(
    shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float] = 0.5
) -> list[tuple[slice, ...]]:
    """All patch windows (as tuples of slices) that tile a volume of ``shape``.

    ``overlap`` is one fraction for every axis, or one per axis.
    """
    if len(shape) != len(patch):
        raise ValueError(f"shape {tuple(shape)} and patch {tuple(patch)} differ in length")
    overlaps = [overlap] * len(shape) if np.isscalar(overlap) else list(overlap)
    if len(overlaps) != len(shape):
        raise ValueError(f"overlap {tuple(overlaps)} needs one value per axis of shape {tuple(shape)}")
    starts = [tile_starts(s, p, o) for s, p, o in zip(shape, patch, overlaps)]
    grid = np.meshgrid(*starts, indexing="ij")
    return [
        tuple(slice(int(o), int(o) + p) for o, p in zip(origin, patch)) for origin in zip(*(g.ravel() for g in grid))
    ]


def gaussian_weight(patch: Sequence[int], sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Blending weight of a patch: a Gaussian centred on it, sigma = ``sigma_scale`` * patch size per axis.

    Predictions near a patch's centre see more context than those at its border, so they
    weigh more where windows overlap. Scaled to a maximum of 1 and kept above ``floor``.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    axes = []
    for p in patch:
        x = np.arange(p) - (p - 1) / 2
        axes.append(np.exp(-0.5 * (x / (sigma_scale * p)) ** 2))
    weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weight /= weight.max()
    return np.maximum(weight, floor).astype(np.float32)
