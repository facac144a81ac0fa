"""Intensity normalisation and the choice of patch shapes (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    voxels: int = 64**3,
) -> tuple[int, int, int]:
    """Largest training patch (z, y, x): a cube in physical space of about ``voxels`` voxels.

    An isotropic volume gets 64x64x64; a 50x4x4 nm EM stack, whose sections are 12.5 times
    thicker than its pixels, gets 12x152x152, the same number of voxels spread over a wider
    field of view. Each axis is a multiple of ``multiple`` and no larger than the volume
    (rounded up to that multiple). Training makes it thin across annotated planes (`thin_depths`).
    """
    ratio = anisotropy(spacing)
    side = (voxels * float(np.prod(ratio))) ** (1 / 3)  # in voxels of the finest axis
    out = []
    for r, s, m in zip(ratio, shape, multiple):
        p = max(m, int(round(max(1.0, side / r) / m)) * m)
        out.append(min(p, int(np.ceil(s / m)) * m))
    return tuple(out)


def thin_depths(
    thin: float,
    spacing: Sequence[float] | None,
    multiple: Sequence[int],
    patch: Sequence[int],
) -> tuple[int, int, int]:
    """Depth (voxels) of a training patch across an annotated plane of each axis (z, y, x).

    ``thin`` is measured in voxels of the finest axis, so a patch is equally thick in physical
    space whatever the voxel size: 16 voxels across a plane of an isotropic volume, but only
    3 sections across a z-plane of a 50x4x4 nm EM stack. A depth is at least 3 voxels (the
    plane and its neighbours, for the 3x3x3 convolutions), a multiple of ``multiple`` and no
    deeper than ``patch``.
    """
    depths = []
    for r, m, p in zip(anisotropy(spacing), multiple, patch):
        depth = max(3.0, thin / r)
        depths.append(min(p, max(m, int(depth / m + 0.5) * m)))
    return tuple(depths)


def inference_patch(train_patch: Sequence[int], shape: Sequence[int], multiple: Sequence[int], factor: int = 2) -> tuple[int, int, int]:
    """Sliding-window patch: ``factor`` times the training patch, no larger than the volume needs."""
    return tuple(min(p * factor, int(np.ceil(s / m)) * m) for p, s, m in zip(train_patch, shape, multiple))


def inference_windows(
    shapes: Mapping[str | None, Sequence[int]],
    patch: Sequence[int],
    shape: Sequence[int],
    multiple: Sequence[int],
) -> list[tuple[int, int, int]]:
    """Sliding windows that match training, one pass per training patch shape.

    ``shapes`` maps each annotated axis ('z', 'y', 'x') to the patch trained across its
    planes, or None to a cube patch; ``patch`` is the largest training patch. A network
    trained on patches only a few planes deep has learnt to predict their middle plane with
    that little context along the axis (padding beyond); in a deeper window it meets input it
    never saw, and its predictions drift (on the Drosophila crop, trained on 3-section
    patches: mean IoU 0.36 with 3-deep windows, 0.18 with 6-deep ones). So across the thin
    axis the window keeps the training depth. It holds about as many voxels as twice
    ``patch`` along each axis (`inference_patch`), the two other axes widened equally to make
    up for the thin one; no axis is larger than the volume needs.
    """
    windows = []
    for axis, train_shape in shapes.items():
        if axis is None:
            windows.append(inference_patch(train_shape, shape, multiple))
            continue
        i = "zyx".index(axis)
        widen = 2 * np.sqrt(patch[i] / train_shape[i])
        caps = [int(np.ceil(s / m)) * m for s, m in zip(shape, multiple)]
        window = [min(int(round(p * widen / m)) * m, c) for p, m, c in zip(train_shape, multiple, caps)]
        window[i] = int(train_shape[i])
        windows.append(tuple(window))
    return windows
