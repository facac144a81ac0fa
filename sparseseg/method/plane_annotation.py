"""An annotation of whole planes held plane by plane (`PlaneAnnotation`), for a volume too large to hold whole: the
forest's sample and the held-out estimate read it as they read an `sparseseg.method.annotation.Annotation`, in memory
that grows with the annotated planes, not with the volume (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseseg.method.annotation import planes_mask
from sparseseg.method.planning import AXES


def on_planes(indices: np.ndarray, planes: dict, shape) -> np.ndarray:
    """Which of the voxels at the flat ``indices`` into a (Z, Y, X) volume of ``shape`` lie on one of ``planes``."""
    coords = np.unravel_index(np.asarray(indices), tuple(shape))
    on = np.zeros(len(indices), dtype=bool)
    for axis, chosen in planes.items():
        on |= np.isin(coords[AXES.index(axis)], list(chosen))
    return on


@dataclass(frozen=True)
class PlaneAnnotation:
    """The annotated voxels of whole planes of a (Z, Y, X) volume, plane by plane.

    Attributes
    ----------
    classes : ndarray of int
        The annotated class ids, sorted.
    shape : (Z, Y, X)
        The volume's.
    sheets : dict
        Per annotated plane, keyed (axis, index): its (target, mask), 2D arrays of class indices into ``classes`` and
        of the voxels annotated, as `sparseseg.method.annotation.Annotation` holds them on that plane.
    """

    classes: np.ndarray
    shape: tuple[int, int, int]
    sheets: dict

    @property
    def planes(self) -> dict[str, list[int]]:
        found = {a: sorted(i for axis, i in self.sheets if axis == a) for a in AXES}
        return {a: v for a, v in found.items() if v}

    def has_planes(self, planes: dict) -> bool:
        """Whether ``planes`` names only planes of this annotation."""
        return all(axis in AXES and all((axis, i) in self.sheets for i in v) for axis, v in planes.items())

    def plane(self, axis: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (target, mask) of the plane ``axis=index``: all False where it is not annotated."""
        if (axis, index) in self.sheets:
            return self.sheets[axis, index]
        k = AXES.index(axis)
        flat = tuple(n for j, n in enumerate(self.shape) if j != k)
        return np.zeros(flat, np.int64), np.zeros(flat, bool)

    def voxels(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat indices of the annotated voxels, sorted (a voxel where planes cross once), and their targets."""
        indices, targets = [], []
        for (axis, index), (target, mask) in self.sheets.items():
            k = AXES.index(axis)
            local = np.nonzero(mask)
            coords = list(local)
            coords.insert(k, np.full(len(local[0]), index))
            indices.append(np.ravel_multi_index(tuple(coords), self.shape))
            targets.append(target[mask])
        if not indices:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        flat, first = np.unique(np.concatenate(indices), return_index=True)
        return flat, np.concatenate(targets)[first]

    def annotated_at(self, indices: np.ndarray) -> np.ndarray:
        """Whether each voxel at the flat ``indices`` is annotated."""
        return np.isin(np.asarray(indices), self.voxels()[0])

    def without(self, held: dict) -> PlaneAnnotation:
        """The annotation without the ``held`` planes: their sheets dropped, and their lines across the other planes
        unannotated (`sparseseg.method.holdout.without_planes`)."""
        sheets = {}
        for (axis, index), (target, mask) in self.sheets.items():
            if index in held.get(axis, []):
                continue
            k = AXES.index(axis)
            others = {a: list(v) for a, v in held.items() if a != axis}
            one_deep = tuple(1 if j == k else n for j, n in enumerate(self.shape))
            kept = mask & ~np.take(planes_mask(others, one_deep), 0, axis=k)
            sheets[axis, index] = (np.where(kept, target, 0), kept)
        return PlaneAnnotation(self.classes, self.shape, sheets)
