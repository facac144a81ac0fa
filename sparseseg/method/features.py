"""The forest's filter features: Gaussian-smoothed intensities, gradient magnitudes and Hessian eigenvalues of every
channel at five scales (`SIGMAS`), computed block by block (no torch).

The scales are physical where the voxels are anisotropic (sections at least `ANISOTROPIC` times thicker than the
pixels, as in EM stacks): the filters are narrower across the sections, as ilastik's 2-D features would be. Each block
is widened by `HALO` voxels of context (clipped at the volume's edge), the reach of the filters at the largest scale,
so blockwise features equal the whole volume's exactly and memory stays bounded (`BLOCK_BYTES` at a time). Every
block is normalised with the same statistics, those of the whole volume. Where one volume gets several forests, its
features can be computed once (`volume_features`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations_with_replacement
from numbers import Integral, Real

import numpy as np
from skimage import filters
from skimage.feature import hessian_matrix_eigvals

from sparseseg.errors import InputError
from sparseseg.io.blocks import ArraySource, Block, plan_blocks, with_halo
from sparseseg.method.planning import anisotropy
from sparseseg.method.preprocess import intensity_stats, normalise_with, source_stats
from sparseseg.method.progress import checkpoint, current

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


def volume_features(image, budget: int = BLOCK_BYTES, spacing: Sequence[float] | None = None) -> VolumeFeatures | None:
    """The filter features of a whole (C, Z, Y, X) image of voxel size ``spacing`` (`filter_features`), normalised by
    its own statistics; None where they would take more than ``budget`` bytes (then `fit_forest` and
    `forest_probabilities` compute them block by block)."""
    source = as_source(image)
    spacing = filter_spacing(spacing)
    if 4 * n_features(source.shape[0]) * math.prod(source.shape[1:]) > budget:
        return None
    stats = stats_of(source, image, None)
    whole = tuple(slice(0, n) for n in source.shape[1:])
    return VolumeFeatures(filter_features(normalise_with(source.read(whole), stats), spacing), stats, spacing)


def n_features(channels: int) -> int:
    """How many features `filter_features` gives per voxel of a ``channels``-channel image."""
    return channels * len(SIGMAS) * FEATURES_PER_SIGMA


def _one_scale(channel: np.ndarray, sigma: float, ratio, into: np.ndarray) -> None:
    """The features of one channel at one scale into the first `FEATURES_PER_SIGMA` of ``into``'s last axis:
    smoothed intensity, gradient magnitude, Hessian eigenvalues."""
    smooth = filters.gaussian(channel, sigma=[sigma / r for r in ratio], preserve_range=False)
    into[..., 0] = smooth
    edges = sum((filters.sobel(smooth, axis=a) / r) ** 2 for a, r in enumerate(ratio))
    into[..., 1] = np.sqrt(edges) / np.sqrt(3, dtype=np.float32)
    gradient = np.gradient(smooth, *ratio)
    del smooth, edges
    hessian = [np.gradient(gradient[a], ratio[b], axis=b) for a, b in combinations_with_replacement(range(3), 2)]
    del gradient
    for k, eigenvalues in enumerate(hessian_matrix_eigvals(hessian)):
        into[..., 2 + k] = eigenvalues


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
    ratio = filter_ratio(spacing)
    features = np.empty(image.shape[1:] + (n_features(image.shape[0]),), dtype=np.float32)
    image = image.astype(np.float32, copy=False)
    jobs = [(c, s) for c in range(image.shape[0]) for s in range(len(SIGMAS))]
    watching = current()  # the pool's threads do not see the run's progress: each scale checks it

    def one_scale(job):
        checkpoint(watching)
        c, s = job
        _one_scale(image[c], SIGMAS[s], ratio, features[..., (c * len(SIGMAS) + s) * FEATURES_PER_SIGMA :])

    # scipy's filters release the GIL: a scale per core at once (at most the five), each freeing its arrays as it goes
    with ThreadPoolExecutor(max_workers=min(len(SIGMAS), os.cpu_count() or 1)) as pool:
        list(pool.map(one_scale, jobs))
    return features


def filter_ratio(spacing) -> tuple[float, float, float]:
    """How many finest voxels each axis's voxel spans, as the filters see it: (1, 1, 1) unless an axis is at least
    `ANISOTROPIC` times coarser than the finest (`sparseseg.method.planning.anisotropy`)."""
    ratio = anisotropy(filter_spacing(spacing))
    return ratio if max(ratio) >= ANISOTROPIC else (1.0, 1.0, 1.0)


def filter_spacing(spacing) -> tuple[float, float, float] | None:
    """``spacing`` checked: three positive numbers (z, y, x) as floats, or None."""
    if spacing is None:
        return None
    values = list(spacing) if isinstance(spacing, (tuple, list, np.ndarray)) else []
    if len(values) != 3 or not all(
        isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in values
    ):
        raise InputError("must be three positive numbers (z, y, x)", param="spacing", value=spacing)
    return tuple(float(v) for v in values)


class _Indexed:
    """An object indexable like a (C, Z, Y, X) array, with a ``shape``, as a `sparseseg.io.blocks.Source`."""

    spacing = None

    def __init__(self, data):
        self.data = data
        self.shape = tuple(int(n) for n in data.shape)

    def read(self, zyx: Block) -> np.ndarray:
        return np.asarray(self.data[(slice(None),) + tuple(zyx)], dtype=np.float32)


def as_source(image):
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


def stats_of(source, image, stats) -> np.ndarray:
    """The given statistics, checked, or those of the whole image (of its sample planes for a Source)."""
    channels = source.shape[0]
    if stats is None:
        if isinstance(image, np.ndarray):
            return intensity_stats(np.asarray(image, dtype=np.float32))
        return source_stats(source)  # Sources read float32
    stats = np.array(stats, dtype=np.float64)  # a copy: the forest keeps it
    if stats.shape != (channels, 4) or not np.isfinite(stats).all():
        raise InputError(
            f"must be ({channels}, 4) finite numbers (sparseseg.method.preprocess.intensity_stats)",
            param="stats",
            value=stats.shape,
        )
    return stats


def is_features(features, name: str) -> VolumeFeatures:
    """``features``, refused where they are not `VolumeFeatures`."""
    if not isinstance(features, VolumeFeatures):
        raise InputError(
            f"must be sparseseg.method.forest.VolumeFeatures, not {type(features).__name__}",
            param=name,
            value=type(features).__name__,
        )
    return features


def check_features(features, source, name: str) -> None:
    """``features`` of ``source``'s image: `VolumeFeatures` of its shape and channels."""
    is_features(features, name)
    expected = tuple(source.shape[1:]) + (n_features(source.shape[0]),)
    if features.values.shape != expected:
        raise InputError(f"must be the image's features, of shape {expected}", param=name, value=features.values.shape)


def region_of(region, shape) -> Block:
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


def plan_feature_blocks(region: Block, shape, channels: int) -> list[Block]:
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


def features_at(source, stats: np.ndarray, chosen: np.ndarray, spacing) -> np.ndarray:
    """Features (len(chosen), F) of the voxels at the flat indices ``chosen`` (sorted), in that order, for voxels of
    ``spacing``.

    Blocks of the whole volume that hold a chosen voxel read only the bounding box of their chosen voxels, widened by
    the halo: around an annotated plane, the plane and `HALO` planes each side. Nothing of the volume's size is held.
    """
    shape = source.shape[1:]
    coords = np.stack(np.unravel_index(np.asarray(chosen), shape)) if len(chosen) else np.zeros((3, 0), np.intp)
    features = np.empty((len(chosen), n_features(source.shape[0])), dtype=np.float32)
    whole = tuple(slice(0, n) for n in shape)
    for zyx in plan_feature_blocks(whole, shape, source.shape[0]):
        inside = np.logical_and.reduce([(c >= s.start) & (c < s.stop) for c, s in zip(coords, zyx)])
        if not inside.any():
            continue
        hits = coords[:, inside]
        box = tuple(slice(int(h.min()), int(h.max()) + 1) for h in hits)
        read, _ = with_halo(box, (HALO,) * 3, shape)
        block = filter_features(normalise_with(source.read(read), stats), spacing)
        features[inside] = block[tuple(h - r.start for h, r in zip(hits, read))]
    return features
