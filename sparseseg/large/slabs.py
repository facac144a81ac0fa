"""Sparse labels of any size read a few planes at a time, and the slabs around their annotated planes (numpy only).

`scan_labels` decides which voxels are annotated as `sparseseg.method.annotation.annotated_mask` does
(the same rules, the same errors), but it reads the label volume a few planes at a time and
keeps only what it learns per plane; the `LabelScan` it returns says which voxels of any block
are annotated. `read_stack` reads the slabs of the image and the labels around the annotated
planes of one axis, stacked along that axis: a training crop around an annotated plane of
the stack holds what the same crop holds in the whole volume (see `slab_runs`), so training on
the stacks is training on the volume, in memory that grows with the annotation, not the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.blocks import Block, Sink, Source, plan_blocks
from sparseseg.method.annotation import (
    HOW_TO_SAY,
    Annotation,
    check_class_range,
    check_class_type,
    check_unlabeled_counts,
    describe_how,
    planes_from_occupied,
    planes_mask,
)
from sparseseg.method.planning import AXES

#: About this many label voxels are read at once when labels are scanned.
SCAN_VOXELS = 2**24


def z_blocks(shape: Sequence[int], voxels: int | None = None) -> list[Block]:
    """Whole z-planes of a (Z, Y, X) volume, about ``voxels`` (default `SCAN_VOXELS`) voxels, at least one plane, at a
    time."""
    _, y, x = shape
    voxels = SCAN_VOXELS if voxels is None else voxels
    return plan_blocks(shape, (max(1, voxels // max(1, y * x)), y, x))


def block_planes(planes: dict[str, list[int]], zyx: Block) -> np.ndarray:
    """`sparseseg.method.annotation.planes_mask` of the block at ``zyx``: True on the voxels of ``planes`` inside it."""
    local = {a: [i - s.start for i in planes.get(a, []) if s.start <= i < s.stop] for a, s in zip(AXES, zyx)}
    return planes_mask(local, tuple(s.stop - s.start for s in zyx))


@dataclass(frozen=True)
class LabelScan:
    """Which voxels of a sparse label volume are annotated, decided once for the whole volume by `scan_labels`.

    Attributes
    ----------
    shape : (Z, Y, X)
    unlabeled : int or None
        The value of voxels nobody annotated.
    planes : dict
        The annotated planes per axis, as `sparseseg.method.annotation.annotated_mask` gives them.
    within : dict or None
        Only voxels on these planes are annotated (given or detected planes); None: every
        voxel that is not ``unlabeled`` is.
    classes, counts : ndarray of int64
        The annotated class ids, sorted, and how many voxels each one has.
    how : str
        How the annotated voxels were found, in words, for the user.
    """

    shape: tuple[int, int, int]
    unlabeled: int | None
    planes: dict[str, list[int]]
    within: dict[str, list[int]] | None
    classes: np.ndarray
    counts: np.ndarray
    how: str

    def mask(self, labels: np.ndarray, zyx: Block) -> np.ndarray:
        """Which voxels of the (z, y, x) label block read at ``zyx`` are annotated."""
        if self.within is None:
            return labels != self.unlabeled
        mask = block_planes(self.within, zyx)
        if self.unlabeled is not None:
            mask &= labels != self.unlabeled
        return mask

    def target(self, labels: np.ndarray, mask: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """Class indices into ``classes`` (default: the annotated ones) on the ``mask`` of a label block, 0
        elsewhere."""
        target = np.zeros(labels.shape, dtype=np.int64)
        target[mask] = np.searchsorted(self.classes if classes is None else classes, labels[mask].astype(np.int64))
        return target


def _label_block(labels: Source, zyx: Block) -> np.ndarray:
    return np.asarray(labels.read_raw(zyx))[0]


def scan_labels(
    labels: Source, unlabeled: int | None, planes: dict[str, list[int]] | None = None, name: str = "labels"
) -> LabelScan:
    """Scan a (1, Z, Y, X) sparse label source, a few planes at a time, for its annotated voxels.

    Follows `sparseseg.method.annotation.annotated_mask` (its rules, its errors, raised as `InputError`)
    with ``unlabeled`` and the annotated ``planes`` when given; reads the labels twice, never
    more than `SCAN_VOXELS` voxels at once.
    """
    if labels.shape[0] != 1:
        raise InputError(f"{name}: a label volume must be 3D (Z, Y, X), got shape {tuple(labels.shape)}")
    shape = tuple(int(n) for n in labels.shape[1:])
    full, occupied, seen_unlabeled = _plane_occupancy(labels, unlabeled, name)
    if planes is not None and any(planes.values()):
        within, found = planes, "given"
    elif unlabeled is not None and seen_unlabeled:
        within, found = None, "unlabeled"
        planes = {a: np.flatnonzero(full[a]).tolist() for a in AXES}
    else:
        try:
            planes = planes_from_occupied({a: np.flatnonzero(occupied[a]).tolist() for a in AXES}, shape)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
        within, found = planes, "detected"
    empty = np.zeros(0, np.int64)
    scan = LabelScan(shape, unlabeled, planes, within, empty, empty, describe_how(found, unlabeled, planes))
    totals: dict = {}
    for zyx in z_blocks(shape):
        block = _label_block(labels, zyx)
        values, counts = np.unique(block[scan.mask(block, zyx)], return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            totals[value] = totals.get(value, 0) + count
    values = np.array(sorted(totals))
    counts = np.array([totals[v] for v in sorted(totals)], dtype=np.int64)
    if found == "unlabeled":
        check_unlabeled_counts(values, counts, int(np.prod(shape)), unlabeled, name)
    if not counts.sum():
        raise InputError(f"{name}: no voxel is annotated; " + HOW_TO_SAY)
    return LabelScan(shape, unlabeled, planes, within, values.astype(np.int64), counts, scan.how)


def _plane_occupancy(labels: Source, unlabeled: int | None, name: str) -> tuple[dict, dict, bool]:
    """The first pass of `scan_labels`, with the class checks: per axis, the planes with every voxel annotated and the
    planes with a non-zero voxel; and whether any voxel is ``unlabeled``."""
    shape = tuple(int(n) for n in labels.shape[1:])
    full = {a: np.ones(n, dtype=bool) for a, n in zip(AXES, shape)}
    occupied = {a: np.zeros(n, dtype=bool) for a, n in zip(AXES, shape)}
    low = high = None
    seen_unlabeled = False
    for zyx in z_blocks(shape):
        block = _label_block(labels, zyx)
        check_class_type(block, name)
        if block.dtype != bool:
            low = block.min() if low is None else min(low, block.min())
            high = block.max() if high is None else max(high, block.max())
        annotated = block != unlabeled if unlabeled is not None else np.ones(block.shape, dtype=bool)
        seen_unlabeled |= not annotated.all()
        for i, (axis, s) in enumerate(zip(AXES, zyx)):
            other = tuple(j for j in range(3) if j != i)
            full[axis][s] &= annotated.all(axis=other)
            occupied[axis][s] |= (block != 0).any(axis=other)
    if low is not None:
        check_class_range(low, high, name)
    return full, occupied, seen_unlabeled


def slab_runs(indices: Sequence[int], depth: int, size: int) -> list[tuple[int, int]]:
    """The ranges along an axis of ``size`` that hold every crop ``depth`` deep around a plane of ``indices``.

    A crop holds its plane v at any depth (what `sparseseg.method.training.VolumeCrops` cuts; beyond the
    volume it is padding), so it lies within ``v - (depth - 1)`` to ``v + depth``; each range is
    that span clipped to the volume, and ranges that meet are merged. Only the first range can
    start at 0 and only the last end at ``size``: in a stack of the ranges, a crop meets the
    stack's ends where it meets the volume's, and the same padding.
    """
    runs: list[tuple[int, int]] = []
    for v in sorted(indices):
        start, stop = max(0, v - (depth - 1)), min(size, v + depth)
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], stop))
        else:
            runs.append((start, stop))
    return runs


def read_stack(image: Source, labels: Source, scan: LabelScan, axis: str, depth: int) -> tuple[np.ndarray, Annotation]:
    """The slabs of ``image`` and ``labels`` around the annotated planes of ``axis``, stacked along it.

    Each slab holds the crops ``depth`` deep around its planes (`slab_runs`) and the whole
    extent of the two other axes. Returns the raw (C, ...) float32 stack and its `Annotation`,
    whose planes are those of ``axis`` only, at their places in the stack.
    """
    i = AXES.index(axis)
    runs = slab_runs(scan.planes[axis], depth, scan.shape[i])
    shape = list(scan.shape)
    shape[i] = sum(stop - start for start, stop in runs)
    stack = np.empty((image.shape[0],) + tuple(shape), dtype=np.float32)
    target = np.zeros(shape, dtype=np.int64)
    mask = np.zeros(shape, dtype=bool)
    places, at = [], 0
    for start, stop in runs:
        zyx = tuple(slice(start, stop) if k == i else slice(0, n) for k, n in enumerate(scan.shape))
        into = tuple(slice(at, at + stop - start) if k == i else slice(None) for k in range(3))
        stack[(slice(None),) + into] = image.read(zyx)
        block = _label_block(labels, zyx)
        mask[into] = scan.mask(block, zyx)
        target[into] = scan.target(block, mask[into])
        places += [at + v - start for v in scan.planes[axis] if start <= v < stop]
        at += stop - start
    return stack, Annotation(scan.classes, target, mask, {axis: places})


def write_weights(labels: Source, scan: LabelScan, classes: np.ndarray, weights: np.ndarray, sink: Sink) -> None:
    """Write the per-voxel loss weights (`sparseseg.method.annotation.weight_map`) into ``sink`` a few planes at a time.

    ``weights`` holds the weight of each of the network's ``classes``.
    """
    for zyx in z_blocks(scan.shape):
        block = _label_block(labels, zyx)
        mask = scan.mask(block, zyx)
        sink.write(zyx, np.where(mask, weights[scan.target(block, mask, classes)], 0.0).astype(np.float32))
