"""The probabilities of a fitted forest (`sparseseg.method.forest.Forest`) over any region of a volume, block by block,
each block's filter features computed with the context around it (no torch)."""

from __future__ import annotations

import logging
import time

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.blocks import Block, with_halo
from sparseseg.method import features as filter_bank
from sparseseg.method.features import (
    HALO,
    VolumeFeatures,
    as_source,
    check_features,
    is_features,
    plan_feature_blocks,
    region_of,
)
from sparseseg.method.forest import Forest, class_rows
from sparseseg.method.preprocess import normalise_with

log = logging.getLogger("sparseseg")


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
    source = _checked_source(forest, image, features)
    if features is not None:
        _check_features(forest, features)
        return _of_features(forest, features, classes, region)
    shape = source.shape[1:]

    def features_of(zyx: Block) -> np.ndarray:
        read, crop = with_halo(zyx, (HALO,) * 3, shape)
        return filter_bank.filter_features(normalise_with(source.read(read), forest.stats), forest.spacing)[crop]

    return _probabilities(forest, classes, region_of(region, shape), shape, features_of)


def features_probabilities(
    forest: Forest, features: VolumeFeatures, classes, region: Block | None = None
) -> np.ndarray:
    """The forest's class probabilities over a region of a volume whose features (`volume_features`) are computed:
    `forest_probabilities` without the image.

    ``features`` must carry the forest's statistics and voxel size; ``classes`` and ``region`` are as for
    `forest_probabilities`, and so is what it returns.
    """
    _check_forest(forest)
    _check_features(forest, features)
    return _of_features(forest, features, classes, region)


def _of_features(forest: Forest, features: VolumeFeatures, classes, region: Block | None) -> np.ndarray:
    shape = features.values.shape[:3]
    return _probabilities(forest, classes, region_of(region, shape), shape, lambda zyx: features.values[zyx])


def _probabilities(forest: Forest, classes, region: Block, shape, features_of) -> np.ndarray:
    """The forest's probabilities over ``region`` of a volume of (Z, Y, X) ``shape``, block by block; ``features_of``
    gives a block's features."""
    rows, n_rows = class_rows(classes, forest.classes)
    start = time.perf_counter()
    out = np.zeros((n_rows,) + tuple(s.stop - s.start for s in region), np.float32)
    blocks = plan_feature_blocks(region, shape, forest.n_channels)
    for zyx in blocks:
        block = features_of(zyx)
        p = forest.classifier.predict_proba(block.reshape(-1, block.shape[-1]))
        where = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(zyx, region))
        out[(rows,) + where] = p.T.reshape((len(rows),) + block.shape[:3])
    seconds = time.perf_counter() - start
    log.debug("forest: probabilities of %d voxels in %d block(s), %.1f s", out[0].size, len(blocks), seconds)
    return out


def _check_forest(forest) -> None:
    if not isinstance(forest, Forest):
        raise InputError(
            f"must be a sparseseg.method.forest.Forest, not {type(forest).__name__}",
            param="forest",
            value=type(forest).__name__,
        )


def _check_features(forest: Forest, features) -> None:
    """``features`` normalised with the forest's statistics, for its voxel size."""
    is_features(features, "features")
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


def _checked_source(forest: Forest, image, features: VolumeFeatures | None):
    """``image`` as a source, after `forest_probabilities`' checks of the forest, the channels and the features."""
    _check_forest(forest)
    source = as_source(image)
    if source.shape[0] != forest.n_channels:
        raise InputError(
            f"has {source.shape[0]} channel(s), the forest was fitted on {forest.n_channels}",
            param="image",
            value=source.shape,
        )
    if features is not None:
        check_features(features, source, "features")
    return source
