"""Synthetic volumes with dense ground truth, for the demo and the tests (numpy and scipy only)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sparseseg import UNLABELED
from sparseseg.method.annotation import planes_mask
from sparseseg.method.planning import AXES


def blobs(shape=(32, 64, 64), n_blobs: int = 12, noise: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume of ellipsoids of two kinds, and its dense labels.

    Class 1 blobs are bright and smooth, class 2 blobs are darker with a textured inside,
    the background (class 0) is mid-grey with a slow brightness trend across the volume.

    Returns
    -------
    image : float32 (Z, Y, X)
    labels : uint8 (Z, Y, X), values 0, 1, 2
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for i in range(n_blobs):
        centre = rng.uniform(0, 1, 3) * np.array(shape)
        radii = rng.uniform(0.12, 0.22, 3) * min(shape) * np.array([1.0, 1.3, 1.3])
        inside = (((grid - centre.reshape(3, 1, 1, 1)) / radii.reshape(3, 1, 1, 1)) ** 2).sum(0) <= 1
        labels[inside] = 1 + i % 2
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    texture /= texture.std()
    trend = grid[2] / shape[2] * 0.4
    image = 0.5 + trend + np.where(labels == 1, 0.9, 0.0) + np.where(labels == 2, -0.5 + 0.35 * texture, 0.0)
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(scale=noise, size=shape)
    return image.astype(np.float32), labels


def evenly_spaced(size: int, k: int, offset: float | None = None) -> list[int]:
    """k plane indices spread evenly over an axis of ``size`` planes.

    With ``offset`` None, the planes lie at (i + 1) * size / (k + 1), away from the borders
    (as ../shared/bench/sparse_sim.py places them). With an ``offset`` in [0, 1), the axis is
    cut into k equal slabs and plane i lies at (i + offset) * size / k, the same place in
    every slab (systematic sampling with a given start): over offsets spread evenly in
    [0, 1), each voxel is annotated equally often, whatever k.
    """
    if not 1 <= k < size:
        raise ValueError(f"need 1 <= k < {size} (the axis length), got k={k}")
    if offset is None:
        return [min(size - 1, int(round((i + 1) * size / (k + 1)))) for i in range(k)]
    if not 0 <= offset < 1:
        raise ValueError(f"offset must lie in [0, 1), got {offset}")
    return [int((i + offset) * size / k) for i in range(k)]


def sparsify(
    labels: np.ndarray, k: int, axes: str = AXES, unlabeled: int = UNLABELED, offset: float | None = None
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Keep k evenly spaced, fully annotated planes per axis of a dense label volume; the rest becomes ``unlabeled``.

    ``offset`` places the planes as in `evenly_spaced`.
    """
    planes = {a: (evenly_spaced(labels.shape[AXES.index(a)], k, offset) if a in axes else []) for a in AXES}
    sparse = np.full(
        labels.shape, unlabeled, dtype=labels.dtype if unlabeled <= np.iinfo(labels.dtype).max else np.uint16
    )
    mask = planes_mask(planes, labels.shape)
    sparse[mask] = labels[mask]
    return sparse, planes
