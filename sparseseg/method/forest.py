"""A pixel classifier of the kind users already run: a random forest on multiscale filter features (no torch).

This is the classifier of ilastik and of scikit-image's "trainable segmentation": each voxel
is described by Gaussian-smoothed intensities, gradient magnitudes and Hessian eigenvalues
of every channel at five scales (`SIGMAS`, `filter_features`), and a random forest learns
the annotated voxels (`fit_forest`). The scales are physical where the voxels are anisotropic
(sections at least `ANISOTROPIC` times thicker than the pixels, as in EM stacks): the filters
are narrower across the sections, as ilastik's 2-D features would be. Its probabilities
(`forest_probabilities`) are what the network's are blended with
(`sparseseg.method.core.Model.blend`), so that a segmentation is never much worse than this
classifier's.

Features are computed block by block, each block widened by `HALO` voxels of context
(clipped at the volume's edge), so that memory stays bounded (`BLOCK_BYTES` of features at
a time) whatever the volume's size. `HALO` is the reach of the filters at the largest
scale, so blockwise features equal those of the whole volume exactly, and the result does
not depend on how the volume is cut. Every block is normalised with the same statistics,
those of the whole volume, taken when the forest is fitted and kept in it (`Forest.stats`).

Where one volume gets several forests (`sparseseg.method.ensemble` fits one on part of the
annotation, then one on all of it), its features can be computed once (`volume_features`,
for a volume whose features fit in `BLOCK_BYTES`) and handed to `fit_forest` and
`forest_probabilities`, which then filter nothing. Likewise the annotated voxels a forest
learns from can be drawn once with their features (`annotated_sample`) for the forest on all
planes and for `plane_folds`, the small forests that each leave some planes out and score
them (the correction of `sparseseg.method.holdout.plane_correction`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations_with_replacement
from numbers import Integral, Real

import numpy as np
from skimage import filters
from skimage.feature import hessian_matrix_eigvals
from sklearn.ensemble import RandomForestClassifier

from sparseseg.errors import InputError
from sparseseg.io.blocks import ArraySource, Block, plan_blocks, sample_planes, with_halo
from sparseseg.method.annotation import Annotation, planes_mask
from sparseseg.method.planning import anisotropy
from sparseseg.method.preprocess import intensity_stats, normalise_with

log = logging.getLogger("sparseseg")

#: The Gaussian scales of the features, in voxels of the finest axis: evenly spaced in log2 from 0.7 to 8 (0.7, 1.287,
#: 2.366, 4.351, 8), as ``multiscale_basic_features(sigma_min=0.7, sigma_max=8, num_sigma=5)`` spaces them.
SIGMAS = tuple(float(s) for s in np.logspace(np.log2(0.7), np.log2(8.0), 5, base=2))
#: Features per channel and scale: the smoothed intensity, its gradient magnitude and the 3 Hessian eigenvalues.
FEATURES_PER_SIGMA = 5
#: Voxels of context around a block: the Gaussian's reach at the largest scale (scipy truncates at 4 sigma,
#: int(4 * 8 + 0.5) = 32) and 2 more for the Hessian's two finite differences; with it, blockwise features equal
#: the whole volume's exactly.
HALO = 34
#: The filters follow the voxel size (`filter_features`) where an axis is at least this many times coarser than the
#: finest; below it they are isotropic in voxels. nnU-Net's threshold for an anisotropic volume (its ANISO_THRESHOLD).
ANISOTROPIC = 3.0
#: Bytes of features computed at once (a block with its halo): about 2 M voxels at 50 features (2 channels).
BLOCK_BYTES = 400 * 2**20
#: Smallest block edge the planner cuts down to (a smaller block would be mostly halo).
MIN_BLOCK = 16
#: Voxels each tree is fitted on, drawn with replacement from the sample (`fit_forest`): all of them where fewer.
TREE_SAMPLES = 32_000
#: Trees of each forest `plane_folds` fits: only their score is wanted. On the development benchmark the estimate
#: corrected with 25 trees' scores (`sparseseg.method.holdout.plane_correction`) came as near the truth as with 100
#: trees'
#: (within 0.05 on 15 of 18 runs each; the corrections differ by up to 0.03), in a quarter of the time.
FOLD_TREES = 25


@dataclass
class Forest:
    """A fitted pixel classifier.

    Attributes
    ----------
    classifier : sklearn.ensemble.RandomForestClassifier
        Fitted on `filter_features` of the normalised image; its ``classes_`` are `classes`.
    classes : ndarray of int
        The class ids (the label values) it was trained on, sorted.
    stats : ndarray, (C, 4)
        The intensity statistics (`sparseseg.method.preprocess.intensity_stats`) every block is normalised with.
    spacing : (float, float, float) or None
        The voxel size its features were computed for (`filter_features`); None: isotropic (and for forests saved
        before the features followed the voxel size).
    """

    classifier: RandomForestClassifier
    classes: np.ndarray
    stats: np.ndarray
    spacing: tuple[float, float, float] | None = None

    @property
    def n_channels(self) -> int:
        return int(self.stats.shape[0])


@dataclass(frozen=True)
class VolumeFeatures:
    """The filter features of a whole volume, computed once (`volume_features`) for the forests fitted on it.

    Attributes
    ----------
    values : ndarray, (Z, Y, X, F) float32
        `filter_features` of the volume normalised with ``stats``.
    stats : ndarray, (C, 4)
        The intensity statistics it was normalised with: those a forest fitted on these features keeps.
    spacing : (float, float, float) or None
        The voxel size the filters followed (None: isotropic): that a forest fitted on these features keeps.
    """

    values: np.ndarray
    stats: np.ndarray
    spacing: tuple[float, float, float] | None = None


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


def volume_features(image, budget: int = BLOCK_BYTES, spacing: Sequence[float] | None = None) -> VolumeFeatures | None:
    """The filter features of a whole (C, Z, Y, X) image of voxel size ``spacing`` (`filter_features`), normalised by
    its own statistics; None where they would take more than ``budget`` bytes (then `fit_forest` and
    `forest_probabilities` compute them block by block)."""
    source = _source(image)
    spacing = _spacing(spacing)
    if 4 * n_features(source.shape[0]) * math.prod(source.shape[1:]) > budget:
        return None
    stats = _stats(source, image, None)
    whole = tuple(slice(0, n) for n in source.shape[1:])
    return VolumeFeatures(filter_features(normalise_with(source.read(whole), stats), spacing), stats, spacing)


def n_features(channels: int) -> int:
    """How many features `filter_features` gives per voxel of a ``channels``-channel image."""
    return channels * len(SIGMAS) * FEATURES_PER_SIGMA


def filter_features(image: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Multiscale filter features of a normalised image: intensity, edges and texture at each of `SIGMAS`.

    Per channel and scale: the Gaussian-smoothed intensity, the magnitude of its Sobel
    gradient and the three eigenvalues of its Hessian (finite differences), in this order, as
    `skimage.feature.multiscale_basic_features` gives them. On an anisotropic volume (an axis
    at least `ANISOTROPIC` times coarser than the finest) the scales are physical: along an
    axis whose voxels are r times the finest (`sparseseg.method.planning.anisotropy`), the Gaussian
    is r times narrower in voxels and the derivatives are taken per finest voxel. So the
    sections of a 50x4x4 nm EM stack are barely smoothed into one another, where isotropic
    filters would mix 16 of them at the largest scale.

    Parameters
    ----------
    image : ndarray, (C, Z, Y, X)
        Normalised intensities (`sparseseg.method.preprocess.normalise`); any real dtype, taken as float32 (never
        rescaled).
    spacing : (float, float, float), optional
        Voxel size (z, y, x) in any unit. None, or no axis `ANISOTROPIC` times coarser than the finest: the
        features are exactly those of `skimage.feature.multiscale_basic_features` at `SIGMAS`.

    Returns
    -------
    ndarray, (Z, Y, X, F) float32
        F = ``n_features(C)`` features per voxel.

    Raises
    ------
    InputError
        ``image`` is not a 4-D array of real numbers with at least 2 voxels along z, y and x, or ``spacing`` is not
        three positive numbers.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise InputError("must be a (C, Z, Y, X) image (4 axes)", param="image", value=image.shape)
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise InputError(f"must hold real numbers, not {image.dtype}", param="image", value=image.shape)
    if image.shape[0] < 1 or min(image.shape[1:]) < 2:
        raise InputError("needs at least one channel and 2 voxels along z, y and x", param="image", value=image.shape)
    ratio = anisotropy(_spacing(spacing))
    ratio = ratio if max(ratio) >= ANISOTROPIC else (1.0, 1.0, 1.0)
    features = np.empty(image.shape[1:] + (n_features(image.shape[0]),), dtype=np.float32)
    image = image.astype(np.float32, copy=False)
    jobs = [(c, s) for c in range(image.shape[0]) for s in range(len(SIGMAS))]

    def one_scale(job):
        c, s = job
        first = (c * len(SIGMAS) + s) * FEATURES_PER_SIGMA
        smooth = filters.gaussian(image[c], sigma=[SIGMAS[s] / r for r in ratio], preserve_range=False)
        features[..., first] = smooth
        edges = sum((filters.sobel(smooth, axis=a) / r) ** 2 for a, r in enumerate(ratio))
        features[..., first + 1] = np.sqrt(edges) / np.sqrt(3, dtype=np.float32)
        gradient = np.gradient(smooth, *ratio)
        del smooth, edges
        hessian = [np.gradient(gradient[a], ratio[b], axis=b) for a, b in combinations_with_replacement(range(3), 2)]
        del gradient
        for k, eigenvalues in enumerate(hessian_matrix_eigvals(hessian)):
            features[..., first + 2 + k] = eigenvalues

    # scipy's filters release the GIL: a scale per core at once (at most the five), each freeing its arrays as it goes
    with ThreadPoolExecutor(max_workers=min(len(SIGMAS), os.cpu_count() or 1)) as pool:
        list(pool.map(one_scale, jobs))
    return features


def _spacing(spacing) -> tuple[float, float, float] | None:
    """``spacing`` checked: three positive numbers (z, y, x) as floats, or None."""
    if spacing is None:
        return None
    values = list(spacing) if isinstance(spacing, (tuple, list, np.ndarray)) else []
    if len(values) != 3 or not all(
        isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in values
    ):
        raise InputError("must be three positive numbers (z, y, x)", param="spacing", value=spacing)
    return tuple(float(v) for v in values)


def annotated_sample(
    image,
    annotation: Annotation,
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
    annotation : `sparseseg.method.annotation.Annotation`
        The annotated voxels (``mask``) and their classes (``classes[target]``), of the image's (Z, Y, X) shape.
    seed : int
        Seed of the draw (0 <= seed < 2**32); the same seed draws the same voxels.
    max_samples : int
        At most this many annotated voxels, drawn at random without replacement; all of them where fewer.
    stats : ndarray (C, 4), optional
        Intensity statistics to normalise with (`sparseseg.method.preprocess.intensity_stats`), e.g. those of a whole
        volume
        when ``image`` is one slab of it. Default: those of the whole image (of `sparseseg.io.blocks.sample_planes` for
        a
        Source), which is what `sparseseg.method.preprocess.normalise` does.
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
    source = _source(image)
    shape = source.shape[1:]
    _check_annotation(annotation)
    if annotation.mask.shape != shape or annotation.target.shape != shape:
        raise InputError(f"must have the image's shape {shape}", param="annotation", value=annotation.mask.shape)
    seed = _integer(seed, "seed", 0, 2**32 - 1)
    max_samples = _integer(max_samples, "max_samples", 1)
    spacing = _spacing(spacing)
    if features is not None:
        _check_features(features, source, "features")
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
        stats, spacing = features.stats, features.spacing
    stats = _stats(source, image, stats)

    chosen = np.flatnonzero(annotation.mask)
    ids = np.asarray(annotation.classes)[annotation.target.ravel()[chosen]]
    if len(np.unique(ids)) < 2:
        raise InputError(
            "needs annotated voxels of at least two classes", param="annotation", value=np.unique(ids).tolist()
        )
    rng = np.random.default_rng(seed)
    if len(chosen) > max_samples:
        keep = np.sort(rng.choice(len(chosen), max_samples, replace=False))
        chosen, ids = chosen[keep], ids[keep]
    if features is None:
        values = _features_at(source, stats, chosen, spacing)
    else:
        values = features.values.reshape(-1, features.values.shape[-1])[chosen]
    return Sample(chosen, ids, values, stats, spacing)


def fit_forest(
    image,
    annotation: Annotation,
    *,
    seed: int,
    max_samples: int = 200_000,
    n_estimators: int = 100,
    tree_samples: int = TREE_SAMPLES,
    stats: np.ndarray | None = None,
    features: VolumeFeatures | None = None,
    spacing: Sequence[float] | None = None,
    sample: Sample | None = None,
) -> Forest:
    """Fit a random forest on the filter features of (a random sample of) the annotated voxels.

    Parameters
    ----------
    image, annotation
        The raw (C, Z, Y, X) image and its annotation, as for `annotated_sample`.
    seed : int
        Seed of the voxel sample and of the forest (0 <= seed < 2**32); the same seed gives the same forest.
    max_samples, stats, features, spacing
        How the annotated voxels are drawn and their features computed: see `annotated_sample`.
    n_estimators : int
        Number of trees.
    tree_samples : int
        Each tree is fitted on a bootstrap (drawn with replacement) of this many of the sampled voxels, or of as
        many as were sampled where fewer: the classic random forest (scikit-learn's and ilastik's by default) up
        to `TREE_SAMPLES`, past which the fit's time is bounded instead. Fewer fit faster and learn less.
    sample : Sample, optional
        The voxels to fit on, drawn from this image and annotation by `annotated_sample` (with this ``seed``, the
        forest is the one fitted without it): then ``max_samples``, ``stats``, ``features`` and ``spacing`` are
        not used.

    Returns
    -------
    Forest
        Its ``classes`` are the annotated class ids that the sample holds.

    Raises
    ------
    InputError
        A bad image, an annotation of another shape or with fewer than two annotated classes, or a bad number.
    """
    n_estimators = _integer(n_estimators, "n_estimators", 1)
    tree_samples = _integer(tree_samples, "tree_samples", 1)
    start = time.perf_counter()
    if sample is None:
        sample = annotated_sample(
            image, annotation, seed=seed, max_samples=max_samples, stats=stats, features=features, spacing=spacing
        )
    else:
        _check_sample(sample, annotation)
    seed = _integer(seed, "seed", 0, 2**32 - 1)
    classifier = _fit_classifier(sample.features, sample.ids, n_estimators, tree_samples, seed)
    classes = np.asarray(classifier.classes_, dtype=np.int64)
    lost = np.setdiff1d(annotation.classes, classes)
    if len(lost):
        log.warning(
            "forest: classes %s have no voxel among the %d sampled; the forest never predicts them",
            [int(c) for c in lost],
            len(sample.ids),
        )
    log.info(
        "forest: %d trees on %d voxels, %d features, %.1f s",
        n_estimators,
        len(sample.ids),
        sample.features.shape[1],
        time.perf_counter() - start,
    )
    return Forest(classifier, classes, sample.stats, sample.spacing)


def plane_folds(
    sample: Sample,
    annotation: Annotation,
    folds: Sequence[dict],
    *,
    seed: int,
    n_estimators: int = FOLD_TREES,
    tree_samples: int = TREE_SAMPLES,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Out-of-fold forest probabilities on annotated planes: each fold's planes scored by a forest fitted without them.

    For each fold, a forest is fitted on the sampled voxels that lie on none of its planes and
    predicts the sampled voxels that lie on one of them, so that each plane is judged by a
    classifier that never saw it, as the held-out planes judge the network
    (`sparseseg.method.holdout.plane_correction`).

    Parameters
    ----------
    sample : Sample
        Drawn from ``annotation`` by `annotated_sample`.
    annotation : `sparseseg.method.annotation.Annotation`
        The annotation the sample was drawn from; its ``classes`` order the rows of the probabilities.
    folds : sequence of dict
        The planes of each fold, per axis, e.g. ``[{'z': [12]}, {'z': [30], 'y': [7]}]``: annotated planes.
    seed : int
        Seed of the forests (0 <= seed < 2**32).
    n_estimators : int
        Trees per forest.
    tree_samples : int
        As for `fit_forest`.

    Returns
    -------
    list of (ndarray (K, N) float32, ndarray of int (N,))
        Per fold, the class probabilities (row k: class ``annotation.classes[k]``) of the N sampled voxels on its
        planes, and their classes as indices into ``annotation.classes``.

    Raises
    ------
    InputError
        A sample not drawn from this annotation, a fold naming a plane that is not annotated, a fold whose planes
        hold none of the sampled voxels or all of them, or a bad number.
    """
    _check_sample(sample, annotation)
    seed = _integer(seed, "seed", 0, 2**32 - 1)
    n_estimators = _integer(n_estimators, "n_estimators", 1)
    tree_samples = _integer(tree_samples, "tree_samples", 1)
    masks = []
    for fold in folds:
        if not isinstance(fold, dict) or not fold or not annotation.has_planes(fold):
            raise InputError("must be annotated planes per axis, e.g. {'z': [12]}", param="folds", value=fold)
        on = planes_mask(fold, annotation.mask.shape).ravel()[sample.indices]
        if on.all() or not on.any():
            raise InputError(
                f"its planes hold {'all' if on.any() else 'none'} of the sampled voxels", param="folds", value=fold
            )
        masks.append(on)
    targets = annotation.target.ravel()[sample.indices]
    out = []
    for on in masks:
        classifier = _fit_classifier(sample.features[~on], sample.ids[~on], n_estimators, tree_samples, seed)
        rows, _ = _rows(annotation.classes, np.asarray(classifier.classes_, dtype=np.int64))
        probabilities = np.zeros((len(annotation.classes), int(on.sum())), np.float32)
        probabilities[rows] = classifier.predict_proba(sample.features[on]).T
        out.append((probabilities, targets[on]))
    return out


def forest_probabilities(
    forest: Forest, image, classes, region: Block | None = None, features: VolumeFeatures | None = None
) -> np.ndarray:
    """The forest's class probabilities over a region of an image, computed block by block.

    Parameters
    ----------
    forest : Forest
        From `fit_forest`.
    image : ndarray or `sparseseg.io.blocks.Source`, (C, Z, Y, X)
        Raw intensities with the channels the forest was fitted on (normalised here by ``forest.stats``); an object
        indexable like an array with a ``shape`` (a Zarr or HDF5 array) works too.
    classes : sequence of int
        The class ids to give rows for, in this order (e.g. the network's classes): all of ``forest.classes`` and
        possibly more, whose rows are 0.
    region : tuple of 3 slices, optional
        Where in (Z, Y, X): plain slices (step 1) inside the volume. Default: the whole volume. Features see the
        image around it too (`HALO` voxels), so a region's probabilities equal those of the whole volume there.
    features : VolumeFeatures, optional
        The image's features (`volume_features`) with the forest's statistics and voxel size: then none are computed
        here.

    Returns
    -------
    ndarray, (len(classes), z, y, x) float32
        Row k is the probability of class ``classes[k]``; each voxel's rows sum to 1.

    Raises
    ------
    InputError
        A bad image or one with other channels, ``classes`` that miss one of the forest's, a bad region.
    """
    if not isinstance(forest, Forest):
        raise InputError(
            f"must be a sparseseg.method.forest.Forest, not {type(forest).__name__}",
            param="forest",
            value=type(forest).__name__,
        )
    source = _source(image)
    if source.shape[0] != forest.n_channels:
        raise InputError(
            f"has {source.shape[0]} channel(s), the forest was fitted on {forest.n_channels}",
            param="image",
            value=source.shape,
        )
    rows, n_rows = _rows(classes, forest.classes)
    shape = source.shape[1:]
    region = _region(region, shape)
    start = time.perf_counter()
    out = np.zeros((n_rows,) + tuple(s.stop - s.start for s in region), np.float32)
    if features is not None:
        _check_features(features, source, "features")
        if not np.array_equal(features.stats, forest.stats):
            raise InputError(
                "were normalised with other statistics than the forest's", param="features", value=features.values.shape
            )
        if features.spacing != forest.spacing:
            raise InputError(
                f"were computed for voxels of {features.spacing}, the forest's are {forest.spacing}",
                param="features",
                value=features.values.shape,
            )
    blocks = _plan(region, shape, forest.n_channels)
    for zyx in blocks:
        if features is None:
            read, crop = with_halo(zyx, (HALO,) * 3, shape)
            block = filter_features(normalise_with(source.read(read), forest.stats), forest.spacing)[crop]
        else:
            block = features.values[zyx]
        p = forest.classifier.predict_proba(block.reshape(-1, block.shape[-1]))
        where = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(zyx, region))
        out[(rows,) + where] = p.T.reshape((len(rows),) + block.shape[:3])
    log.debug(
        "forest: probabilities of %d voxels in %d block(s), %.1f s",
        out[0].size,
        len(blocks),
        time.perf_counter() - start,
    )
    return out


# --- helpers ------------------------------------------------------------------------------------


class _Indexed:
    """An object indexable like a (C, Z, Y, X) array, with a ``shape``, as a `sparseseg.io.blocks.Source`."""

    spacing = None

    def __init__(self, data):
        self.data = data
        self.shape = tuple(int(n) for n in data.shape)

    def read(self, zyx: Block) -> np.ndarray:
        return np.asarray(self.data[(slice(None),) + tuple(zyx)], dtype=np.float32)


def _source(image):
    """``image`` as a Source: a numpy array, a Source (with ``read``) or anything indexable with a ``shape``."""
    shape = getattr(image, "shape", None)
    if shape is None:
        raise InputError(
            f"must be a (C, Z, Y, X) array or a sparseseg.io.blocks.Source, not {type(image).__name__}",
            param="image",
            value=type(image).__name__,
        )
    shape = tuple(shape)
    if len(shape) != 4:
        raise InputError("must be a (C, Z, Y, X) image (4 axes)", param="image", value=shape)
    if isinstance(image, np.ndarray):
        if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
            raise InputError(f"must hold real numbers, not {image.dtype}", param="image", value=shape)
        return ArraySource(image)
    return image if callable(getattr(image, "read", None)) else _Indexed(image)


def _stats(source, image, stats) -> np.ndarray:
    """The given statistics, checked, or those of the whole image (of its sample planes for a Source)."""
    channels = source.shape[0]
    if stats is None:
        sample = image if isinstance(image, np.ndarray) else sample_planes(source)
        return intensity_stats(np.asarray(sample, dtype=np.float32))
    stats = np.array(stats, dtype=np.float64)  # a copy: the forest keeps it
    if stats.shape != (channels, 4) or not np.isfinite(stats).all():
        raise InputError(
            f"must be ({channels}, 4) finite numbers (sparseseg.method.preprocess.intensity_stats)",
            param="stats",
            value=stats.shape,
        )
    return stats


def _check_features(features, source, name: str) -> None:
    if not isinstance(features, VolumeFeatures):
        raise InputError(
            f"must be sparseseg.method.forest.VolumeFeatures, not {type(features).__name__}",
            param=name,
            value=type(features).__name__,
        )
    expected = tuple(source.shape[1:]) + (n_features(source.shape[0]),)
    if features.values.shape != expected:
        raise InputError(f"must be the image's features, of shape {expected}", param=name, value=features.values.shape)


def _fit_classifier(
    features: np.ndarray, ids: np.ndarray, n_estimators: int, tree_samples: int, seed: int
) -> RandomForestClassifier:
    """A random forest fitted on these rows, each tree on a bootstrap of at most ``tree_samples`` of them."""
    classifier = RandomForestClassifier(
        n_estimators=n_estimators, n_jobs=-1, max_samples=min(len(ids), tree_samples), random_state=seed
    )
    return classifier.fit(features, ids)


def _check_annotation(annotation) -> None:
    if not isinstance(annotation, Annotation):
        raise InputError(
            f"must be a sparseseg.method.annotation.Annotation, not {type(annotation).__name__}",
            param="annotation",
            value=type(annotation).__name__,
        )


def _check_sample(sample, annotation) -> None:
    if not isinstance(sample, Sample):
        raise InputError(
            f"must be a sparseseg.method.forest.Sample, not {type(sample).__name__}",
            param="sample",
            value=type(sample).__name__,
        )
    _check_annotation(annotation)
    indices = np.asarray(sample.indices)
    if indices.size and (indices.max() >= annotation.mask.size or not annotation.mask.ravel()[indices].all()):
        raise InputError(
            "was not drawn from this annotation (a voxel of it is not annotated)", param="sample", value=len(indices)
        )


def _integer(value, name: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low or (high is not None and value > high):
        rule = f"must be a whole number >= {low}" + (f" and <= {high}" if high is not None else "")
        raise InputError(rule, param=name, value=value)
    return int(value)


def _rows(classes, fitted: np.ndarray) -> tuple[np.ndarray, int]:
    """The row in ``classes`` of each of the forest's classes, and how many rows ``classes`` asks for."""
    given = np.asarray(classes)
    if given.ndim != 1 or not given.size or not np.issubdtype(given.dtype, np.integer):
        raise InputError("must be a list of class ids (whole numbers)", param="classes", value=given.tolist())
    if len(np.unique(given)) != len(given):
        raise InputError("must not repeat a class id", param="classes", value=given.tolist())
    missing = np.setdiff1d(fitted, given)
    if len(missing):
        raise InputError(
            f"must hold every class of the forest {fitted.tolist()}; it lacks {missing.tolist()}",
            param="classes",
            value=given.tolist(),
        )
    return np.array([int(np.flatnonzero(given == c)[0]) for c in fitted], dtype=np.intp), len(given)


def _region(region, shape) -> Block:
    """``region`` checked against the (Z, Y, X) ``shape``, with its Nones filled in; the whole volume for None."""
    if region is None:
        return tuple(slice(0, n) for n in shape)
    shown = str(region)[:80]
    if not isinstance(region, (tuple, list)) or len(region) != 3 or not all(isinstance(s, slice) for s in region):
        raise InputError("must be 3 slices (z, y, x)", param="region", value=shown)
    out = []
    for s, n, axis in zip(region, shape, "zyx"):
        start = 0 if s.start is None else s.start
        stop = n if s.stop is None else s.stop
        if s.step not in (None, 1) or not all(isinstance(v, Integral) for v in (start, stop)):
            raise InputError(f"{axis}: must be a plain slice of whole numbers (step 1)", param="region", value=shown)
        if not 0 <= start < stop <= n:
            raise InputError(f"{axis}: {start}:{stop} is empty or outside 0:{n}", param="region", value=shown)
        out.append(slice(int(start), int(stop)))
    return tuple(out)


def _plan(region: Block, shape, channels: int) -> list[Block]:
    """Blocks tiling ``region`` whose features, with their halo, fit in `BLOCK_BYTES`, reading the fewest voxels in all.

    Of the cuts into n_z x n_y x n_x equal blocks (edges down to `MIN_BLOCK`), the one whose reads (blocks with
    their halos, clipped at the volume's edge) add up to the fewest voxels while the largest fits; where none
    fits, the finest cut.
    """
    budget = max(1, BLOCK_BYTES // (4 * n_features(channels)))
    sizes, widest, total = [], [], []
    for s, n in zip(region, shape):
        size = s.stop - s.start
        cuts = sorted({math.ceil(size / k) for k in range(1, max(1, math.ceil(size / MIN_BLOCK)) + 1)}, reverse=True)
        reads = [
            [min(n, min(o + b, s.stop) + HALO) - max(0, o - HALO) for o in range(s.start, s.stop, b)] for b in cuts
        ]
        sizes.append(cuts)
        widest.append(np.array([max(r) for r in reads], dtype=np.float64))
        total.append(np.array([sum(r) for r in reads], dtype=np.float64))
    largest = widest[0][:, None, None] * widest[1][None, :, None] * widest[2][None, None, :]
    voxels = total[0][:, None, None] * total[1][None, :, None] * total[2][None, None, :]
    voxels[largest > budget] = np.inf
    best = np.unravel_index(np.argmin(voxels), voxels.shape) if np.isfinite(voxels).any() else (-1, -1, -1)
    block = [cuts[i] for cuts, i in zip(sizes, best)]
    origin = [s.start for s in region]
    size = [s.stop - s.start for s in region]
    return [tuple(slice(o + s.start, o + s.stop) for o, s in zip(origin, b)) for b in plan_blocks(size, block)]


def _features_at(source, stats: np.ndarray, chosen: np.ndarray, spacing) -> np.ndarray:
    """Features (len(chosen), F) of the voxels at the flat indices ``chosen`` (sorted), in that order, for voxels of
    ``spacing``.

    Blocks of the whole volume that hold a chosen voxel read only the bounding box of their chosen voxels, widened by
    the halo: around an annotated plane, the plane and `HALO` planes each side.
    """
    shape = source.shape[1:]
    marked = np.zeros(shape, dtype=bool)
    marked.flat[chosen] = True
    features = np.empty((len(chosen), n_features(source.shape[0])), dtype=np.float32)
    whole = tuple(slice(0, n) for n in shape)
    for zyx in _plan(whole, shape, source.shape[0]):
        local = marked[zyx]
        if not local.any():
            continue
        hits = np.nonzero(local)
        box = tuple(slice(s.start + h.min(), s.start + h.max() + 1) for s, h in zip(zyx, hits))
        read, _ = with_halo(box, (HALO,) * 3, shape)
        block = filter_features(normalise_with(source.read(read), stats), spacing)
        at = tuple(h + s.start - r.start for h, s, r in zip(hits, zyx, read))
        flat = np.ravel_multi_index(tuple(h + s.start for h, s in zip(hits, zyx)), shape)
        features[np.searchsorted(chosen, flat)] = block[at]
    return features
