"""Intensity normalisation and the choice of patch shapes (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per-channel robust z-score: clip to the [low, high] percentiles, subtract the mean, divide by the std.

    Parameters
    ----------
    image : ndarray, (C, Z, Y, X)
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    for c, channel in enumerate(image):
        lo, hi = np.percentile(channel, [low, high])
        clipped = np.clip(channel, lo, hi)
        std = clipped.std()
        out[c] = (clipped - clipped.mean()) / (std if std > 0 else 1.0)
    return out


def anisotropy(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    """Voxel size relative to the finest axis, e.g. (12.5, 1, 1) for a 50x4x4 nm EM stack."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    finest = min(spacing)
    return tuple(float(s) / finest for s in spacing)


def default_patch(
    shape: Sequence[int],
    spacing: Sequence[float] | None,
    multiple: Sequence[int],
    size: int = 64,
) -> tuple[int, int, int]:
    """Largest training patch (z, y, x): about ``size`` voxels of the finest axis in physical extent per axis.

    Each axis is a multiple of ``multiple`` and no larger than the volume (rounded up to
    that multiple). Training makes it thin across annotated planes (`Config.thin`).
    """
    ratio = anisotropy(spacing)
    out = []
    for r, s, m in zip(ratio, shape, multiple):
        p = max(m, int(round(max(1.0, size / r) / m)) * m)
        out.append(min(p, int(np.ceil(s / m)) * m))
    return tuple(out)


def inference_patch(train_patch: Sequence[int], shape: Sequence[int], multiple: Sequence[int], factor: int = 2) -> tuple[int, int, int]:
    """Sliding-window patch: ``factor`` times the training patch, no larger than the volume needs."""
    return tuple(min(p * factor, int(np.ceil(s / m)) * m) for p, s, m in zip(train_patch, shape, multiple))
