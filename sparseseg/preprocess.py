"""Intensity normalisation (numpy only)."""

from __future__ import annotations

import numpy as np

#: How `normalise` maps intensities, in words (saved in model folders).
NORMALISATION = "per-channel z-score after clipping to the 0.5-99.5 percentiles"


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
