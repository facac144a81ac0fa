"""The annotation convention, plane detection and the weight map.

Convention
----------
A sparse label volume has the shape of the image. Annotated voxels hold class ids
(0 = background, 1, 2, ... the other classes); voxels nobody annotated hold the
*unlabeled* value, 255 by default. Alternatively the annotated planes are named explicitly
(``--planes z=12,40 y=64``) and everything outside them is unlabeled, which suits labels
painted in napari or Fiji where background stays 0 everywhere. Where neither is given,
the planes of one axis that carry any non-zero voxel are taken as the annotated ones,
but only when exactly one axis looks like that.

The network is trained with a weight per voxel: 0 where nothing was annotated, and a
class-balancing weight elsewhere that lowers the weight of the dominant background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseseg import UNLABELED
from sparseseg.errors import InputError
from sparseseg.method.planning import AXES

#: Largest class id a label volume may hold (uint16 output).
MAX_CLASS_ID = 65535

HOW_TO_SAY = (
    "say which voxels are annotated either with an unlabeled value (--unlabeled N, default 255) "
    "or with the annotated planes (--planes z=12,40 y=64)"
)


@dataclass(frozen=True)
class Annotation:
    """A sparse annotation, ready for training.

    Attributes
    ----------
    classes : ndarray of int
        The class ids that were annotated, sorted; network output k stands for ``classes[k]``.
    target : ndarray of int64, (Z, Y, X)
        Class index 0..K-1 on annotated voxels, 0 elsewhere.
    mask : ndarray of bool, (Z, Y, X)
        True where a voxel was annotated.
    planes : dict
        Annotated planes per axis where known ({'z': [...], 'y': [...], 'x': [...]}), else empty.
    """

    classes: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    planes: dict[str, list[int]]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def has_planes(self, planes: dict) -> bool:
        """Whether ``planes`` ({'z': [12], ...}) names only planes of this annotation, along the axes 'z', 'y', 'x'."""
        return all(axis in AXES and set(v) <= set(self.planes.get(axis, [])) for axis, v in planes.items())

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.mask.shape

    def plane(self, axis: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (target, mask) of the plane ``axis=index``."""
        where = plane_index(axis, index)
        return self.target[where], self.mask[where]

    def voxels(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat indices of the annotated voxels, sorted, and their targets."""
        chosen = np.flatnonzero(self.mask)
        return chosen, self.target.ravel()[chosen]

    def annotated_at(self, indices: np.ndarray) -> np.ndarray:
        """Whether each voxel at the flat ``indices`` is annotated."""
        return self.mask.ravel()[np.asarray(indices)]


def parse_planes(specs: list[str] | None, shape: tuple[int, int, int]) -> dict[str, list[int]]:
    """Parse ``['z=12,40', 'y=64']`` into ``{'z': [12, 40], 'y': [64], 'x': []}``, checked against ``shape``."""
    planes: dict[str, list[int]] = {a: [] for a in AXES}
    for spec in specs or []:
        for part in spec.split():
            axis, sep, values = part.partition("=")
            axis = axis.strip().lower()
            if not sep or axis not in tuple(AXES) or not values:
                raise InputError(f"--planes {part!r}: expected AXIS=I,J,... with AXIS one of z, y, x (e.g. z=12,40)")
            size = shape[AXES.index(axis)]
            for value in values.split(","):
                try:
                    index = int(value)
                except ValueError:
                    raise InputError(f"--planes {part!r}: {value!r} is not a plane index") from None
                if not 0 <= index < size:
                    raise InputError(f"--planes {part!r}: plane {index} is outside 0..{size - 1} along {axis}")
                planes[axis].append(index)
    return {a: sorted(set(v)) for a, v in planes.items()}


def plane_index(axis: str, index: int) -> tuple:
    """The plane ``axis=index`` as an index into a (Z, Y, X) array."""
    where = [slice(None)] * 3
    where[AXES.index(axis)] = index
    return tuple(where)


def planes_mask(planes: dict[str, list[int]], shape: tuple[int, int, int]) -> np.ndarray:
    """Boolean mask that is True on every voxel of the given planes."""
    mask = np.zeros(shape, dtype=bool)
    for axis, indices in planes.items():
        index = [slice(None)] * 3
        index[AXES.index(axis)] = indices
        mask[tuple(index)] = True
    return mask


def detect_planes(labels: np.ndarray) -> dict[str, list[int]]:
    """Find the annotated planes of labels drawn on the planes of one axis with background 0 elsewhere.

    Along the axis the user annotated, few planes hold any non-zero voxel; along the others,
    most do. Exactly one axis with at most half of its planes non-empty is required.
    """
    occupied = {}
    for i, axis in enumerate(AXES):
        other = tuple(j for j in range(3) if j != i)
        occupied[axis] = np.flatnonzero(np.any(labels != 0, axis=other)).tolist()
    return planes_from_occupied(occupied, labels.shape)


def planes_from_occupied(occupied: dict[str, list[int]], shape: tuple[int, int, int]) -> dict[str, list[int]]:
    """The annotated planes of `detect_planes` from the planes per axis that hold any non-zero voxel."""
    if not any(occupied.values()):
        raise InputError("labels hold no non-zero voxel, so no annotated plane can be found; " + HOW_TO_SAY)
    candidates = [a for a in AXES if 0 < len(occupied[a]) <= shape[AXES.index(a)] // 2]
    if len(candidates) != 1:
        found = ", ".join(f"{a}: {len(occupied[a])}/{shape[AXES.index(a)]}" for a in AXES)
        raise InputError(
            f"cannot tell which planes are annotated (planes with labels per axis: {found}); " + HOW_TO_SAY
        )
    axis = candidates[0]
    return {a: (occupied[a] if a == axis else []) for a in AXES}


def annotation_planes(mask: np.ndarray) -> dict[str, list[int]]:
    """The planes that are fully annotated in ``mask``, per axis (where the annotation is plane-wise)."""
    planes = {}
    for i, axis in enumerate(AXES):
        other = tuple(j for j in range(3) if j != i)
        planes[axis] = np.flatnonzero(np.all(mask, axis=other)).tolist()
    return planes


def check_class_ids(labels: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` unless ``labels`` holds whole numbers in 0..65535."""
    check_class_type(labels, name)
    if labels.dtype != bool:
        check_class_range(labels.min(), labels.max(), name)


def check_class_type(labels: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` unless ``labels`` (a whole volume or a block of one) holds whole numbers; see
    `check_class_ids`."""
    if labels.dtype == bool:
        return
    if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
        raise InputError(f"{name}: unsupported data type {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise InputError(f"{name}: class ids must be whole numbers, found non-integer values")


def check_class_range(low, high, name: str = "labels") -> None:
    """Raise `InputError` unless the smallest and largest value of a label volume lie in 0..65535."""
    if low < 0 or high > MAX_CLASS_ID:
        raise InputError(f"{name}: class ids must lie in 0..{MAX_CLASS_ID}, found values from {low} to {high}")


def annotated_mask(
    labels: np.ndarray,
    unlabeled: int | None = UNLABELED,
    planes: dict[str, list[int]] | None = None,
    name: str = "labels",
) -> tuple[np.ndarray, dict[str, list[int]], str]:
    """Which voxels of a sparse label volume were annotated, following the convention above.

    Returns the boolean mask, the annotated planes per axis where known, and how they were
    found, in words, for the user.
    """
    if labels.ndim != 3:
        raise InputError(f"{name}: a label volume must be 3D, got shape {labels.shape}")
    check_class_ids(labels, name)
    if planes is not None and any(planes.values()):
        mask = planes_mask(planes, labels.shape)
        if unlabeled is not None:
            mask &= labels != unlabeled
        how = describe_how("given", unlabeled, planes)
    elif unlabeled is not None and np.any(labels == unlabeled):
        mask = labels != unlabeled
        _check_unlabeled(labels, mask, unlabeled, name)
        planes = annotation_planes(mask)
        how = describe_how("unlabeled", unlabeled, planes)
    else:
        try:
            planes = detect_planes(labels)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
        mask = planes_mask(planes, labels.shape)
        how = describe_how("detected", unlabeled, planes)
    if not mask.any():
        raise InputError(f"{name}: no voxel is annotated; " + HOW_TO_SAY)
    return mask, planes, how


def describe_how(found: str, unlabeled: int | None, planes: dict[str, list[int]]) -> str:
    """How the annotated voxels were ``found`` ('given' planes, an 'unlabeled' value, 'detected' planes), in words."""
    if found == "given":
        return "annotated planes given: " + _describe(planes)
    if found == "unlabeled":
        how = f"voxels not equal to {unlabeled} are annotated"
        return how + (" (" + _describe(planes) + ")" if any(planes.values()) else "")
    return f"no voxel holds {unlabeled}; planes with labels found: " + _describe(planes)


def _check_unlabeled(labels: np.ndarray, mask: np.ndarray, unlabeled: int, name: str) -> None:
    """Refuse an unlabeled value that leaves another value looking like the unlabeled one.

    A sparse annotation leaves most voxels unannotated. Where the voxels said to be annotated
    are mostly one value that is also the largest one (the 255 of a file whose unlabeled
    value is 255, read with another unlabeled value), that value is the real unlabeled value:
    taking it as a class would segment everything as it.
    """
    values, counts = np.unique(labels[mask], return_counts=True)
    check_unlabeled_counts(values, counts, mask.size, unlabeled, name)


def check_unlabeled_counts(
    values: np.ndarray, counts: np.ndarray, size: int, unlabeled: int, name: str = "labels"
) -> None:
    """The check of `_check_unlabeled` from the annotated ``values`` (sorted) and their ``counts`` in a volume of
    ``size`` voxels."""
    if not len(values):
        return
    top = int(np.argmax(counts))
    if len(values) >= 2 and top == len(values) - 1 and counts[top] > size / 2:
        raise InputError(
            f"{name}: the unlabeled value is {unlabeled}, but {values[top]} fills {counts[top] / size:.0%} of the "
            f"volume as unannotated voxels do, so it cannot be a class; " + HOW_TO_SAY
        )


def read_annotation(
    labels: np.ndarray,
    unlabeled: int | None = UNLABELED,
    planes: dict[str, list[int]] | None = None,
    name: str = "labels",
) -> tuple[Annotation, str]:
    """Turn a sparse label volume into an `Annotation`, following the convention above.

    Parameters
    ----------
    labels : ndarray, (Z, Y, X)
        The sparse label volume.
    unlabeled : int or None
        Value of voxels that were not annotated.
    planes : dict, optional
        Annotated planes per axis; when given, voxels outside them are unlabeled.
    name : str
        Name used in error messages (the file name).

    Returns
    -------
    annotation : Annotation
    how : str
        How the annotated voxels were found, in words, for the user.
    """
    mask, planes, how = annotated_mask(labels, unlabeled, planes, name)
    values = labels[mask].astype(np.int64)
    classes = np.unique(values)
    check_two_classes(classes, name)
    target = np.zeros(labels.shape, dtype=np.int64)
    target[mask] = np.searchsorted(classes, values)
    return Annotation(classes, target, mask, planes), how


def check_two_classes(classes: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` unless at least two classes (sorted ids) were annotated."""
    if len(classes) < 2:
        raise InputError(
            f"{name}: only class {classes[0]} is annotated; annotate at least two classes (e.g. background 0 and 1)"
        )


def _describe(planes: dict[str, list[int]]) -> str:
    return " ".join(f"{a}={','.join(map(str, v))}" for a, v in planes.items() if v) or "none"


def class_weights(annotation: Annotation, power: float = 0.5) -> np.ndarray:
    """Class-balancing weights: rarer annotated classes weigh more, the dominant background less.

    ``w_k = (f_k) ** -power`` for the annotated frequency ``f_k`` of class k, scaled so that
    the mean weight over annotated voxels is 1. ``power=0`` gives equal weights.
    """
    return weights_from_counts(np.bincount(annotation.target[annotation.mask], minlength=annotation.n_classes), power)


def weights_from_counts(counts: np.ndarray, power: float = 0.5) -> np.ndarray:
    """The weights of `class_weights` from annotated voxel counts per class: ``frequency ** -power``, mean 1 over
    annotated voxels; 0 for absent classes."""
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0 or counts.min() < 0:
        raise ValueError(f"need non-negative counts with a positive sum, got {counts.tolist()}")
    freq = counts / counts.sum()
    weights = np.where(counts > 0, np.maximum(freq, 1e-12) ** -power, 0.0)
    return (weights / (weights * freq).sum()).astype(np.float32)


def weight_map(annotation: Annotation, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-voxel loss weight: 0 on unlabeled voxels, the class weight of the annotated class elsewhere."""
    if weights is None:
        weights = class_weights(annotation)
    if len(weights) != annotation.n_classes:
        raise ValueError(f"expected {annotation.n_classes} class weights, got {len(weights)}")
    return np.where(annotation.mask, weights[annotation.target], 0.0).astype(np.float32)
