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
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model, prior_of
from sparseseg.method.holdout import Estimate, blend_probabilities, plane_correction, plane_voxels
from sparseseg.method.planning import AXES

log = logging.getLogger("sparseseg")


def forest_on_planes(forest, image, classes, held: dict, features=None) -> dict:
    """The forest's probabilities (K, plane) on each held-out plane, keyed by (axis, index).

    A plane's probabilities need the filters' context around it (`sparseseg.method.features.HALO`
    planes each side): where the volume's ``features`` are given, or those slabs add up to
    the volume or more, the whole volume is computed once and the planes taken from it;
    otherwise plane by plane.
    """
    from sparseseg.method.features import HALO
    from sparseseg.method.forest_apply import forest_probabilities

    shape = image.shape[1:]
    slabs = sum(
        min(2 * HALO + 1, shape[AXES.index(axis)]) * math.prod(shape) // shape[AXES.index(axis)]
        for axis, indices in held.items()
        for _ in indices
    )
    whole = (
        forest_probabilities(forest, image, classes, features=features)
        if features is not None or slabs >= math.prod(shape)
        else None
    )
    planes = {}
    for axis, indices in held.items():
        k = 1 + AXES.index(axis)
        for index in indices:
            if whole is not None:
                planes[axis, index] = np.take(whole, index, axis=k)
            else:
                region = tuple(slice(index, index + 1) if a == axis else slice(None) for a in AXES)
                planes[axis, index] = np.take(forest_probabilities(forest, image, classes, region), 0, axis=k)
    return planes


def held_out_probabilities(
    model: Model, network: np.ndarray | None, forest, image, annotation: Annotation, held: dict, features=None
):
    """The probabilities (network prior-corrected, or None; forest or None), classes and plane numbers of the held-out
    voxels."""
    nets, forests, targets, planes, names = [], [], [], [], []
    prior = prior_of(model)
    on_planes = forest_on_planes(forest, image, model.classes, held, features) if forest is not None else {}
    for axis, indices in held.items():
        for index in indices:
            where, mask = plane_voxels(annotation, axis, index)
            if not mask.any():
                continue
            if network is not None:
                p = network[(slice(None),) + where][:, mask].astype(np.float32)
                nets.append(blend_probabilities(p, None, 1.0, prior))
            if forest is not None:
                forests.append(on_planes[axis, index][:, mask])
            targets.append(annotation.target[where][mask])
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


def corrected_estimate(estimate: Estimate, sample, annotation: Annotation, held: dict, config: Config) -> Estimate:
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
