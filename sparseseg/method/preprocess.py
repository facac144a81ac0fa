"""Intensity normalisation (numpy only)."""

from __future__ import annotations

import numpy as np

#: How `normalise` maps intensities, in words (saved in model folders).
NORMALISATION = "per-channel z-score after clipping to the 0.5-99.5 percentiles"


def intensity_stats(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per channel of a (C, ...) sample: the [low, high] percentiles, and the mean and std after clipping to them.

    Returns a (C, 4) array of (lo, hi, mean, std), what `normalise_with` needs.
    """
    stats = np.empty((image.shape[0], 4), dtype=np.float64)
    for c, channel in enumerate(image):
        lo, hi = np.percentile(channel, [low, high])
        clipped = np.clip(channel, lo, hi)
        stats[c] = lo, hi, clipped.mean(), clipped.std()
    return stats


def source_stats(source) -> np.ndarray:
    """`intensity_stats` of a volume read block by block (`sparseseg.io.blocks.Source`), from `sample_planes`."""
    return intensity_stats(sample_planes(source))


def sample_planes(source, voxels: int = 2**24) -> np.ndarray:
    """Evenly spaced whole z-planes of a (C, Z, Y, X) ``source`` (`sparseseg.io.blocks.Source`), about ``voxels``
    voxels per channel: all of it when it is no larger.

    Returns (C, n, Y, X): what `source_stats` takes the intensity statistics from.
    """
    _, z, y, x = source.shape
    n = max(1, min(z, voxels // max(1, y * x)))
    if n == z:
        return source.read((slice(0, z), slice(0, y), slice(0, x)))
    planes = np.unique(np.linspace(0, z - 1, n).round().astype(int))
    return np.concatenate([source.read((slice(p, p + 1), slice(0, y), slice(0, x))) for p in planes], axis=1)


def normalise_with(image: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Normalise a (C, Z, Y, X) image (or a block of one) by `intensity_stats`: clip, subtract the mean, divide by the
    std."""
    if image.ndim != 4 or stats.shape != (image.shape[0], 4):
        raise ValueError(f"expected a (C, Z, Y, X) image and (C, 4) stats, got shapes {image.shape} and {stats.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    for c, (channel, (lo, hi, mean, std)) in enumerate(zip(image, stats)):
        out[c] = (np.clip(channel, lo, hi) - mean) / (std if std > 0 else 1.0)
    return out


def normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per-channel robust z-score: clip to the [low, high] percentiles, subtract the mean, divide by the std.

    Parameters
    ----------
    image : ndarray, (C, Z, Y, X)
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    return normalise_with(image, intensity_stats(image, low, high))
