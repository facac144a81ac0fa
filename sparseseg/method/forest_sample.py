"""The annotated voxels a forest learns from, drawn once with their filter features (`annotated_sample`), for the
forest on all planes and the small forests of `sparseseg.method.forest.plane_folds` (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from sparseseg.errors import InputError
from sparseseg.method.annotation import Annotation
from sparseseg.method.features import (
    VolumeFeatures,
    as_source,
    check_features,
    features_at,
    filter_spacing,
    is_features,
    stats_of,
)
from sparseseg.method.plane_annotation import PlaneAnnotation


@dataclass(frozen=True)
class Sample:
    """Annotated voxels drawn to fit forests on, with their filter features (`annotated_sample`).

    Attributes
    ----------
    indices : ndarray of int, (N,)
        Their flat indices into the (Z, Y, X) volume, sorted.
    ids : ndarray of int, (N,)
        Their class ids (label values).
    features : ndarray, (N, F) float32
        Their `filter_features`, of the image normalised with ``stats``, for voxels of ``spacing``.
    stats : ndarray, (C, 4)
        The intensity statistics the image was normalised with: those a forest fitted on the sample keeps.
    spacing : (float, float, float) or None
        The voxel size the filters followed (None: isotropic).
    """

    indices: np.ndarray
    ids: np.ndarray
    features: np.ndarray
    stats: np.ndarray
    spacing: tuple[float, float, float] | None = None


def annotated_sample(
    image,
    annotation: Annotation | PlaneAnnotation,
    *,
    seed: int,
    max_samples: int = 200_000,
    stats: np.ndarray | None = None,
    features: VolumeFeatures | None = None,
    spacing: Sequence[float] | None = None,
) -> Sample:
    """Draw annotated voxels to fit forests on, and compute their filter features.

    Parameters
    ----------
    image : ndarray or `sparseseg.io.blocks.Source`, (C, Z, Y, X)
        Raw intensities; normalised here (`sparseseg.method.preprocess.normalise_with` by ``stats``).
    annotation : `sparseseg.method.annotation.Annotation` or `sparseseg.method.plane_annotation.PlaneAnnotation`
        The annotated voxels (``mask``) and their classes (``classes[target]``), of the image's (Z, Y, X) shape.
    seed : int
        Seed of the draw (0 <= seed < 2**32); the same seed draws the same voxels.
    max_samples : int
        At most this many annotated voxels, drawn at random without replacement; all of them where fewer.
    stats : ndarray (C, 4), optional
        Intensity statistics to normalise with (`sparseseg.method.preprocess.intensity_stats`), e.g. those of a whole
        volume when ``image`` is one slab of it. Default: those of the whole image
        (`sparseseg.method.preprocess.source_stats` for a Source), as `sparseseg.method.preprocess.normalise` takes
        them.
    features : VolumeFeatures, optional
        The image's features (`volume_features`), computed once for several forests: then none are computed here,
        and the sample keeps their statistics and voxel size (``stats`` must then be None, ``spacing`` None or theirs).
    spacing : (float, float, float), optional
        The voxel size (z, y, x): the filters' scales follow it (`filter_features`). None: isotropic voxels.

    Raises
    ------
    InputError
        A bad image, an annotation of another shape or with fewer than two annotated classes, or a bad number.

    Notes
    -----
    Features are computed only around the drawn voxels, block by block (bounded memory): for annotated planes,
    about `HALO` planes of context on each side of each plane.
    """
    source = as_source(image)
    shape = source.shape[1:]
    _check_draw(annotation, shape, seed, max_samples)
    spacing = filter_spacing(spacing)
    if features is not None:
        _check_given(features, source, stats, spacing)
        return _of_features(features, annotation, seed, max_samples)
    stats = stats_of(source, image, stats)
    chosen, ids = _draw(annotation, seed, max_samples)
    return Sample(chosen, ids, features_at(source, stats, chosen, spacing), stats, spacing)


def features_sample(
    features: VolumeFeatures, annotation: Annotation | PlaneAnnotation, *, seed: int, max_samples: int = 200_000
) -> Sample:
    """Draw annotated voxels to fit forests on, their features taken from the volume's (`volume_features`):
    `annotated_sample` without the image. The sample keeps the features' statistics and voxel size.

    Raises
    ------
    InputError
        Features that are not `VolumeFeatures`, an annotation of another shape or with fewer than two annotated
        classes, or a bad number.
    """
    _check_draw(annotation, is_features(features, "features").values.shape[:3], seed, max_samples)
    return _of_features(features, annotation, seed, max_samples)


def _of_features(features: VolumeFeatures, annotation, seed: int, max_samples: int) -> Sample:
    values = features.values
    chosen, ids = _draw(annotation, seed, max_samples)
    stats = np.array(features.stats, dtype=np.float64)  # a copy: the forest keeps it
    return Sample(chosen, ids, values.reshape(-1, values.shape[-1])[chosen], stats, features.spacing)


def _check_draw(annotation, shape, seed, max_samples) -> None:
    check_annotation(annotation)
    if tuple(annotation.shape) != tuple(shape):
        raise InputError(f"must have the image's shape {tuple(shape)}", param="annotation", value=annotation.shape)
    check_integer(seed, "seed", 0, 2**32 - 1)
    check_integer(max_samples, "max_samples", 1)


def _draw(annotation: Annotation | PlaneAnnotation, seed: int, max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_samples`` annotated voxels drawn at random (flat indices, in order) and their class ids; an
    annotation of fewer than two classes is refused."""
    chosen, targets = annotation.voxels()
    ids = np.asarray(annotation.classes)[targets]
    if len(np.unique(ids)) < 2:
        raise InputError(
            "needs annotated voxels of at least two classes", param="annotation", value=np.unique(ids).tolist()
        )
    if len(chosen) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), max_samples, replace=False))
        chosen, ids = chosen[keep], ids[keep]
    return chosen, ids


def _check_given(features: VolumeFeatures, source, stats, spacing) -> None:
    """``features`` of the image's shape, without ``stats`` (they carry theirs) and for the voxel size ``spacing``."""
    check_features(features, source, "features")
    if stats is not None:
        raise InputError(
            "give stats or features, not both (features carry their statistics)",
            param="stats",
            value=np.shape(stats),
        )
    if spacing is not None and spacing != features.spacing:
        raise InputError(
            f"differs from the voxel size the features were computed for, {features.spacing}",
            param="spacing",
            value=spacing,
        )


def check_annotation(annotation) -> None:
    if not isinstance(annotation, (Annotation, PlaneAnnotation)):
        raise InputError(
            f"must be a sparseseg.method.annotation.Annotation or PlaneAnnotation, not {type(annotation).__name__}",
            param="annotation",
            value=type(annotation).__name__,
        )


def check_sample(sample, annotation) -> None:
    if not isinstance(sample, Sample):
        raise InputError(
            f"must be a sparseseg.method.forest_sample.Sample, not {type(sample).__name__}",
            param="sample",
            value=type(sample).__name__,
        )
    check_annotation(annotation)
    indices = np.asarray(sample.indices)
    if indices.size and (indices.max() >= np.prod(annotation.shape) or not annotation.annotated_at(indices).all()):
        raise InputError(
            "was not drawn from this annotation (a voxel of it is not annotated)", param="sample", value=len(indices)
        )


def check_integer(value, name: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low or (high is not None and value > high):
        rule = f"must be a whole number >= {low}" + (f" and <= {high}" if high is not None else "")
        raise InputError(rule, param=name, value=value)
    return int(value)
