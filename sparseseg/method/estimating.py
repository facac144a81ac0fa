"""What `sparseseg.method.ensemble.fit_estimated` scores on the held-out planes: the network's and the forest's
probabilities of their annotated voxels, and the estimate corrected by what the forest loses without those planes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np

from sparseseg.config import Config
from sparseseg.method.holdout import Estimate, blend_probabilities, plane_correction
from sparseseg.method.planning import AXES

log = logging.getLogger("sparseseg")


def forest_on_planes(forest, image, classes, held: dict, features=None) -> dict:
    """The forest's probabilities (K, plane) on each held-out plane, keyed by (axis, index).

    Where the volume's ``features`` are given, the planes' features are taken from them; otherwise a plane needs the
    filters' context around it (`sparseseg.method.features.HALO` planes each side), and where those slabs add up to
    the volume or more, the whole volume is computed once and the planes taken from it.
    """
    from sparseseg.method.features import HALO
    from sparseseg.method.forest_apply import features_probabilities, forest_probabilities

    shape = image.shape[1:]
    slabs = sum(
        min(2 * HALO + 1, shape[AXES.index(axis)]) * math.prod(shape) // shape[AXES.index(axis)]
        for axis, indices in held.items()
        for _ in indices
    )
    if features is None and slabs >= math.prod(shape):
        return take_planes(forest_probabilities(forest, image, classes), held)
    planes = {}
    for axis, indices in held.items():
        for index in indices:
            region = tuple(slice(index, index + 1) if a == axis else slice(None) for a in AXES)
            if features is not None:
                p = features_probabilities(forest, features, classes, region)
            else:
                p = forest_probabilities(forest, image, classes, region)
            planes[axis, index] = np.take(p, 0, axis=1 + AXES.index(axis))
    return planes


def take_planes(probabilities: np.ndarray, held: dict) -> dict:
    """The (K, plane) probabilities of each plane of ``held`` out of (K, Z, Y, X) ``probabilities``, keyed (axis,
    index)."""
    return {
        (axis, index): np.take(probabilities, index, axis=1 + AXES.index(axis))
        for axis, indices in held.items()
        for index in indices
    }


def held_out_probabilities(
    network_planes: dict | None, prior: np.ndarray | None, forest_planes: dict | None, annotation, held: dict
):
    """The probabilities of the held-out voxels, network's (from ``network_planes``, keyed as `take_planes` keys
    them, prior-corrected by ``prior``; None: no network) and forest's (from ``forest_planes``, `forest_on_planes`;
    None: no forest), their classes, plane numbers and the planes' names. ``annotation``: an `Annotation` or a
    `sparseseg.method.plane_annotation.PlaneAnnotation`."""
    nets, forests, targets, planes, names = [], [], [], [], []
    for axis, indices in held.items():
        for index in indices:
            target, mask = annotation.plane(axis, index)
            if not mask.any():
                continue
            if network_planes is not None:
                p = network_planes[axis, index][:, mask].astype(np.float32)
                nets.append(blend_probabilities(p, None, 1.0, prior))
            if forest_planes is not None:
                forests.append(forest_planes[axis, index][:, mask])
            targets.append(target[mask])
            planes.append(np.full(int(mask.sum()), len(names)))
            names.append(f"{axis}={index}")
    join = np.concatenate
    return (
        join(nets, axis=1) if nets else None,
        join(forests, axis=1) if forests else None,
        join(targets),
        join(planes),
        names,
    )


def corrected_estimate(estimate: Estimate, sample, annotation, held: dict, config: Config) -> Estimate:
    """The estimate with the forest's correction for what the held-out planes miss
    (`sparseseg.method.holdout.plane_correction`)."""
    from sparseseg.method.forest import plane_folds

    start = time.perf_counter()
    folds = [held] + [{axis: [index]} for axis, indices in annotation.planes.items() for index in indices]
    first, *each = plane_folds(sample, annotation, folds, seed=config.seed)
    correction = plane_correction(first, each, np.asarray(annotation.classes) != 0, fit=config.calibrate)
    log.info(
        "the forest fitted without each annotated plane in turn: %+.3f to the estimate, %.1f s",
        correction,
        time.perf_counter() - start,
    )
    return replace(estimate, iou=estimate.iou + correction, correction=correction)
