"""Which plane to annotate next: rank unannotated planes by the model's uncertainty (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseseg.method.planning import AXES


@dataclass(frozen=True)
class Suggestion:
    axis: str
    index: int
    uncertainty: float  # mean normalised predictive entropy over the plane, 0..1


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Predictive entropy per voxel of (K, Z, Y, X) probabilities, divided by log K (so 0..1)."""
    if probabilities.ndim != 4 or probabilities.shape[0] < 2:
        raise ValueError(f"expected (K, Z, Y, X) probabilities with K >= 2, got shape {probabilities.shape}")
    p = np.clip(probabilities.astype(np.float32), 1e-7, 1.0)
    return np.clip(-(p * np.log(p)).sum(axis=0) / np.log(probabilities.shape[0]), 0.0, 1.0)


def plane_uncertainty(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Mean normalised entropy of every plane, per axis."""
    h = entropy(probabilities)
    return {a: h.mean(axis=tuple(j for j in range(3) if j != i)) for i, a in enumerate(AXES)}


class PlaneEntropy:
    """`plane_uncertainty` accumulated block by block, in memory that does not grow with the volume.

    ``add(zyx, p)`` takes the (K, z, y, x) probabilities of one block; once every voxel of the
    (Z, Y, X) ``shape`` was added exactly once, ``result()`` is what `plane_uncertainty`
    gives for the whole volume (to float round-off: sums are kept in float64).
    """

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        self.sums = {a: np.zeros(n) for a, n in zip(AXES, self.shape)}

    def add(self, zyx, probabilities: np.ndarray) -> None:
        h = entropy(probabilities)
        for i, (axis, s) in enumerate(zip(AXES, zyx)):
            self.sums[axis][s] += h.sum(axis=tuple(j for j in range(3) if j != i), dtype=np.float64)

    def result(self) -> dict[str, np.ndarray]:
        size = float(np.prod(self.shape))
        return {a: self.sums[a] / (size / n) for a, n in zip(AXES, self.shape)}


def rank_planes(
    uncertainty: dict[str, np.ndarray],
    annotated: dict[str, list[int]] | None = None,
    top: int = 5,
    min_distance: int | None = None,
    border: int | None = None,
) -> list[Suggestion]:
    """The ``top`` most uncertain planes that are not annotated.

    A plane closer than ``min_distance`` to an annotated or an already suggested plane of the
    same axis is skipped, so suggestions spread out (default: 1/20 of the axis length, at
    least 2). So is a plane within ``border`` planes of the volume's faces (default: 1/8 of
    the axis length): near the faces a network with padded convolutions is unsure because it
    sees padding, which annotating there would not cure.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if set(uncertainty) != set(AXES):
        raise ValueError(f"uncertainty needs the axes z, y, x, got {sorted(uncertainty)}")
    for axis, values in uncertainty.items():
        if not np.all(np.isfinite(values)):
            raise ValueError(f"uncertainty along {axis} holds non-finite values")
    annotated = annotated or {}
    taken = {a: list(annotated.get(a, [])) for a in AXES}
    candidates = sorted(
        ((float(u), a, i) for a in AXES for i, u in enumerate(uncertainty[a])),
        key=lambda c: -c[0],
    )
    chosen: list[Suggestion] = []
    for value, axis, index in candidates:
        size = len(uncertainty[axis])
        distance = min_distance if min_distance is not None else max(2, size // 20)
        margin = border if border is not None else size // 8
        if index < margin or index >= size - margin:
            continue
        if any(abs(index - t) < distance for t in taken[axis]) or index in taken[axis]:
            continue
        chosen.append(Suggestion(axis, index, value))
        taken[axis].append(index)
        if len(chosen) == top:
            break
    return chosen
