"""A pixel classifier of the kind users already run: a random forest on multiscale filter features (no torch).

This is the classifier of ilastik and of scikit-image's "trainable segmentation": each voxel is described by its
filter features (`sparseseg.method.features`), and a random forest learns the annotated voxels (`fit_forest`). Its
probabilities (`sparseseg.method.forest_apply.forest_probabilities`, block by block) are what the network's are
blended with (`sparseseg.method.core.Model.blend`), so that a segmentation is never much worse than this classifier's.

The annotated voxels a forest learns from can be drawn once with their features (`annotated_sample`) for the forest
on all planes and for `plane_folds`, the small forests that each leave some planes out and score them (the
correction of `sparseseg.method.holdout.plane_correction`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from sparseseg.errors import InputError
from sparseseg.method.annotation import Annotation
from sparseseg.method.features import VolumeFeatures
from sparseseg.method.forest_sample import Sample, annotated_sample, check_integer, check_sample
from sparseseg.method.plane_annotation import PlaneAnnotation, on_planes
from sparseseg.method.progress import checkpoint

log = logging.getLogger("sparseseg")

#: Voxels each tree is fitted on, drawn with replacement from the sample (`fit_forest`): all of them where fewer.
TREE_SAMPLES = 32_000
#: Trees grown at a time: a cancelled run ends between batches.
TREE_BATCH = 20
#: Trees of each forest `plane_folds` fits: only their score is wanted. On the development benchmark the estimate
#: corrected with 25 trees' scores (`sparseseg.method.holdout.plane_correction`) came as near the truth as with 100
#: trees' (within 0.05 on 15 of 18 runs each; the corrections differ by up to 0.03), in a quarter of the time.
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


def fit_forest(
    image,
    annotation: Annotation | PlaneAnnotation,
    *,
    seed: int,
    max_samples: int = 200_000,
    n_estimators: int = 100,
    tree_samples: int = TREE_SAMPLES,
    features: VolumeFeatures | None = None,
    sample: Sample | None = None,
) -> Forest:
    """Fit a random forest on the filter features of (a random sample of) the annotated voxels.

    Parameters
    ----------
    image, annotation
        The raw (C, Z, Y, X) image and its annotation, as for `annotated_sample`.
    seed : int
        Seed of the voxel sample and of the forest (0 <= seed < 2**32); the same seed gives the same forest.
    max_samples, features
        How many annotated voxels are drawn, and their features where computed already: see `annotated_sample`.
    n_estimators : int
        Number of trees.
    tree_samples : int
        Each tree is fitted on a bootstrap (drawn with replacement) of this many of the sampled voxels, or of as
        many as were sampled where fewer: the classic random forest (scikit-learn's and ilastik's by default) up
        to `TREE_SAMPLES`, past which the fit's time is bounded instead. Fewer fit faster and learn less.
    sample : Sample, optional
        The voxels to fit on, drawn from this image and annotation by `annotated_sample` (with this ``seed``, the
        forest is the one fitted without it): then ``max_samples`` and ``features`` are not used. A sample drawn
        with other statistics or a voxel size (anisotropic filters) gives the forest those.

    Returns
    -------
    Forest
        Its ``classes`` are the annotated class ids that the sample holds.

    Raises
    ------
    InputError
        A bad image, an annotation of another shape or with fewer than two annotated classes, or a bad number.
    """
    n_estimators = check_integer(n_estimators, "n_estimators", 1)
    tree_samples = check_integer(tree_samples, "tree_samples", 1)
    start = time.perf_counter()
    if sample is None:
        sample = annotated_sample(image, annotation, seed=seed, max_samples=max_samples, features=features)
    else:
        check_sample(sample, annotation)
    seed = check_integer(seed, "seed", 0, 2**32 - 1)
    classifier = _fit_classifier(sample.features, sample.ids, n_estimators, tree_samples, seed)
    classes = np.asarray(classifier.classes_, dtype=np.int64)
    _say_fitted(sample, np.setdiff1d(annotation.classes, classes), n_estimators, time.perf_counter() - start)
    return Forest(classifier, classes, sample.stats, sample.spacing)


def plane_folds(
    sample: Sample,
    annotation: Annotation | PlaneAnnotation,
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
    annotation : `sparseseg.method.annotation.Annotation` or `sparseseg.method.plane_annotation.PlaneAnnotation`
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
    check_sample(sample, annotation)
    seed = check_integer(seed, "seed", 0, 2**32 - 1)
    n_estimators = check_integer(n_estimators, "n_estimators", 1)
    tree_samples = check_integer(tree_samples, "tree_samples", 1)
    masks = [_fold_mask(sample, annotation, fold) for fold in folds]
    targets = np.searchsorted(annotation.classes, sample.ids)
    out = []
    for on in masks:
        classifier = _fit_classifier(sample.features[~on], sample.ids[~on], n_estimators, tree_samples, seed)
        rows, _ = class_rows(annotation.classes, np.asarray(classifier.classes_, dtype=np.int64))
        probabilities = np.zeros((len(annotation.classes), int(on.sum())), np.float32)
        probabilities[rows] = classifier.predict_proba(sample.features[on]).T
        out.append((probabilities, targets[on]))
    return out


# --- helpers ------------------------------------------------------------------------------------


def _say_fitted(sample: Sample, lost: np.ndarray, trees: int, seconds: float) -> None:
    """Log the forest fitted, and warn of annotated classes the sample lost."""
    if len(lost):
        message = "forest: classes %s have no voxel among the %d sampled; the forest never predicts them"
        log.warning(message, [int(c) for c in lost], len(sample.ids))
    voxels, features = sample.features.shape
    log.info("forest: %d trees on %d voxels, %d features, %.1f s", trees, voxels, features, seconds)


def _fold_mask(sample: Sample, annotation: Annotation | PlaneAnnotation, fold) -> np.ndarray:
    """Which sampled voxels lie on the planes of ``fold``; a fold of no annotated plane, or whose planes hold none of
    the sampled voxels or all of them, is refused."""
    if not isinstance(fold, dict) or not fold or not annotation.has_planes(fold):
        raise InputError("must be annotated planes per axis, e.g. {'z': [12]}", param="folds", value=fold)
    on = on_planes(sample.indices, fold, annotation.shape)
    if on.all() or not on.any():
        raise InputError(
            f"its planes hold {'all' if on.any() else 'none'} of the sampled voxels", param="folds", value=fold
        )
    return on


def _fit_classifier(
    features: np.ndarray, ids: np.ndarray, n_estimators: int, tree_samples: int, seed: int
) -> RandomForestClassifier:
    """A random forest fitted on these rows, each tree on a bootstrap of at most ``tree_samples`` of them.

    The trees are grown `TREE_BATCH` at a time (the same forest as at once: scikit-learn's warm start draws the same
    seeds), so that a cancelled run ends between batches (`sparseseg.method.progress.checkpoint`).
    """
    classifier = RandomForestClassifier(
        n_estimators=0, n_jobs=-1, max_samples=min(len(ids), tree_samples), random_state=seed, warm_start=True
    )
    for grown in range(min(TREE_BATCH, n_estimators), n_estimators + TREE_BATCH, TREE_BATCH):
        checkpoint()
        classifier.set_params(n_estimators=min(grown, n_estimators))
        classifier.fit(features, ids)
        if grown >= n_estimators:
            break
    return classifier


def class_rows(classes, fitted: np.ndarray) -> tuple[np.ndarray, int]:
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
