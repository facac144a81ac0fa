"""The planning decisions, in one place: axes, the coarse-axis rule, pooling, patch and window shapes (numpy only).

In the spirit of nnU-Net's plans: everything that decides a shape from the voxel size and
the volume's size lives here, as small pure functions. To change the training patch, the
pooling or the inference windows, change this module.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io import base as io_base
from sparseseg.method.tiling import tile_starts, tile_step

#: Most block lengths per axis that `block_for_windows` weighs against each other.
BLOCK_CHOICES = 48

#: Axis names in array order: every volume is (Z, Y, X), or (C, Z, Y, X).
AXES = "zyx"

#: An axis at least this many times coarser than the finest is "coarse": the network does not
#: pool along it (`pooling_kernels`) and augmentation neither scales nor deforms along it.
COARSE = 2.0

Kernel = tuple[int, int, int]


def anisotropy(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    """Voxel size relative to the finest axis, e.g. (12.5, 1, 1) for a 50x4x4 nm EM stack."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    finest = min(spacing)
    return tuple(float(s) / finest for s in spacing)


def pooling_kernels(spacing: Sequence[float] | None, depth: int, ratio: float = COARSE) -> list[Kernel]:
    """Pooling kernel per level: do not pool along an axis that is already much coarser than the finest.

    An axis is pooled at a level when its current voxel size is less than ``ratio`` times the
    finest current voxel size (as nnU-Net plans it). Pooling doubles the voxel size of the
    pooled axes, so a 4x4x50 nm EM stack pools only in y and x for its first levels.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    current = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    if len(current) != 3 or min(current) <= 0:
        raise ValueError(f"spacing must be three positive numbers (z, y, x), got {spacing}")
    kernels = []
    for _ in range(depth):
        finest = min(current)
        kernel = tuple(2 if s < ratio * finest else 1 for s in current)
        kernels.append(kernel)
        current = [s * k for s, k in zip(current, kernel)]
    return kernels


def size_multiple(kernels: Sequence[Kernel]) -> tuple[int, int, int]:
    """Each axis of a network input must be a multiple of this (the product of the pooling kernels)."""
    multiple = [1, 1, 1]
    for kernel in kernels:
        multiple = [m * k for m, k in zip(multiple, kernel)]
    return tuple(multiple)


def default_patch(
    shape: Sequence[int],
    spacing: Sequence[float] | None,
    multiple: Sequence[int],
    voxels: int = 64**3,
) -> tuple[int, int, int]:
    """Largest training patch (z, y, x): a cube in physical space of about ``voxels`` voxels.

    An isotropic volume gets 64x64x64; a 50x4x4 nm EM stack, whose sections are 12.5 times
    thicker than its pixels, gets 12x152x152, the same number of voxels spread over a wider
    field of view. Each axis is a multiple of ``multiple`` and no larger than the volume
    (rounded up to that multiple). Training makes it thin across annotated planes (`thin_depths`).
    """
    ratio = anisotropy(spacing)
    side = (voxels * float(np.prod(ratio))) ** (1 / 3)  # in voxels of the finest axis
    out = []
    for r, s, m in zip(ratio, shape, multiple):
        p = max(m, int(round(max(1.0, side / r) / m)) * m)
        out.append(min(p, int(np.ceil(s / m)) * m))
    return tuple(out)


def clip_patch(patch: Sequence[int], shape: Sequence[int], multiple: Sequence[int]) -> tuple[int, int, int]:
    """``patch`` no larger along any axis than ``shape`` needs (rounded up to ``multiple``)."""
    return tuple(min(int(p), int(np.ceil(s / m)) * m) for p, s, m in zip(patch, shape, multiple))


def training_patch(
    patch: Sequence[int] | None,
    shape: Sequence[int],
    spacing: Sequence[float] | None,
    multiple: Sequence[int],
    batch_size: int,
) -> tuple[tuple[int, int, int], bool]:
    """The training patch for a volume of ``shape``: ``patch`` (None: `default_patch`), checked and clipped.

    Returns the patch and whether it was clipped to the volume. Raises `InputError` (naming
    ``patch``) for an axis that is no multiple of ``multiple``, or for a patch so small that
    the network's deepest level would see one voxel per batch, where batch norm cannot train.
    """
    patch = tuple(int(p) for p in patch) if patch else default_patch(shape, spacing, multiple)
    if any(p % m for p, m in zip(patch, multiple)):
        raise InputError(
            f"each axis must be a multiple of {','.join(map(str, multiple))} for this network",
            param="patch",
            value=patch,
        )
    clipped = clip_patch(patch, shape, multiple)
    if batch_size * int(np.prod([p // m for p, m in zip(clipped, multiple)])) < 2:
        raise InputError(
            f"too small for this network (one voxel at its deepest level, batch size {batch_size}): "
            f"make an axis at least {2 * max(multiple)} or the batch size at least 2",
            param="patch",
            value=clipped,
        )
    return clipped, clipped != patch


def thin_depths(
    thin: float,
    spacing: Sequence[float] | None,
    multiple: Sequence[int],
    patch: Sequence[int],
) -> tuple[int, int, int]:
    """Depth (voxels) of a training patch across an annotated plane of each axis (z, y, x).

    ``thin`` is measured in voxels of the finest axis, so a patch is equally thick in physical
    space whatever the voxel size: 16 voxels across a plane of an isotropic volume, but only
    3 sections across a z-plane of a 50x4x4 nm EM stack. A depth is at least 3 voxels (the
    plane and its neighbours, for the 3x3x3 convolutions), a multiple of ``multiple`` and no
    deeper than ``patch``.
    """
    depths = []
    for r, m, p in zip(anisotropy(spacing), multiple, patch):
        depth = max(3.0, thin / r)
        depths.append(min(p, max(m, int(depth / m + 0.5) * m)))
    return tuple(depths)


def patch_shapes(
    patch: tuple[int, int, int], thin: Sequence[int] | None, planes_axes: Sequence[str]
) -> dict[str | None, tuple[int, int, int]]:
    """Training patch per annotated axis: ``patch``, made ``thin[i]`` deep across the planes of axis i.

    ``thin`` holds a depth per axis (z, y, x), see `thin_depths`. Key None (cube patches
    around any annotated voxel) is used when ``thin`` is None or no annotation is plane-wise.
    """
    if not thin or not planes_axes:
        return {None: tuple(patch)}
    shapes = {}
    for axis in planes_axes:
        i = AXES.index(axis)
        shape = list(patch)
        shape[i] = min(patch[i], thin[i])
        shapes[axis] = tuple(shape)
    return shapes


def inference_patch(
    train_patch: Sequence[int], shape: Sequence[int], multiple: Sequence[int], factor: int = 2
) -> tuple[int, int, int]:
    """Sliding-window patch: ``factor`` times the training patch, no larger than the volume needs."""
    return clip_patch([p * factor for p in train_patch], shape, multiple)


def inference_windows(
    shapes: Mapping[str | None, Sequence[int]],
    patch: Sequence[int],
    shape: Sequence[int],
    multiple: Sequence[int],
) -> list[tuple[int, int, int]]:
    """Sliding windows that match training, one pass per training patch shape.

    ``shapes`` maps each annotated axis ('z', 'y', 'x') to the patch trained across its
    planes, or None to a cube patch; ``patch`` is the largest training patch. A network
    trained on patches only a few planes deep has learnt to predict their planes with
    that little context along the axis (padding beyond); in a deeper window it meets input it
    never saw, and its predictions drift (on the Drosophila crop, trained on 3-section
    patches: mean IoU 0.36 with 3-deep windows, 0.18 with 6-deep ones). So across the thin
    axis the window keeps the training depth. It holds about as many voxels as twice
    ``patch`` along each axis (`inference_patch`), the two other axes widened equally to make
    up for the thin one; no axis is larger than the volume needs.
    """
    windows = []
    for axis, train_shape in shapes.items():
        if axis is None:
            windows.append(inference_patch(train_shape, shape, multiple))
            continue
        i = AXES.index(axis)
        widen = 2 * np.sqrt(patch[i] / train_shape[i])
        window = list(
            clip_patch([int(round(p * widen / m)) * m for p, m in zip(train_shape, multiple)], shape, multiple)
        )
        window[i] = int(train_shape[i])
        windows.append(tuple(window))
    return windows


def window_overlaps(
    shapes: Mapping[str | None, Sequence[int]], overlap: float, wide_overlap: float
) -> list[tuple[float, float, float]]:
    """Overlap of the sliding windows per axis (z, y, x), one per pass of `inference_windows`, in its order.

    Across the annotated planes of a pass (its thin axis) the windows overlap by ``overlap``:
    there they keep the training depth, and how well a window's outer planes are predicted
    depends on training (see `sparseseg.config.Config`'s ``overlap``). Along the other axes,
    where the windows are wide, ``wide_overlap``: each window's border is a small part of it
    there, and every overlapping window is paid for in time (2 x per axis at 0.5, 1.33 x at
    0.25, 1.14 x at 0.125). A cube pass (key None) has wide axes only.
    """
    for name, value in (("overlap", overlap), ("wide_overlap", wide_overlap)):
        if not 0 <= value < 1:
            raise InputError("must lie in [0, 1)", param=name, value=value)
    return [
        tuple(overlap if axis is not None and i == AXES.index(axis) else wide_overlap for i in range(3))
        for axis in shapes
    ]


def window_halo(windows: Sequence[Sequence[int]], overlaps: Sequence[Sequence[float]]) -> tuple[int, int, int]:
    """Context to read around a block, per axis (z, y, x), for windows of these shapes overlapping by these fractions.

    Windows of length w that step by s leave every voxel at least (w - s) / 2 voxels from
    the edge of a window over it (the worst placed voxels lie in the middle of two windows'
    overlap). A block read with that much more on each side gives the voxels at its border
    no less context than the tiling gives any voxel. The most over the passes; 1 plane for a
    3-deep window stepping by one, 28 voxels for a 224-wide one overlapping by a quarter.
    """
    return tuple(
        max(math.ceil((w[i] - tile_step(w[i], o[i])) / 2) for w, o in zip(windows, overlaps)) for i in range(3)
    )


def window_extent(windows: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """The longest of the windows along each axis (z, y, x)."""
    return tuple(max(int(w[i]) for w in windows) for i in range(3))


def block_halo(
    block: Sequence[int], windows: Sequence[Sequence[int]], overlaps: Sequence[Sequence[float]]
) -> tuple[int, int, int]:
    """The halo of blocks of ``block``: `window_halo`, widened where a block is shorter than a step so that the widest
    window still fits a block read with its halo."""
    halo = window_halo(windows, overlaps)
    return tuple(max(h, math.ceil((e - b) / 2)) for h, b, e in zip(halo, block, window_extent(windows)))


def _window_voxels(size: int, block: int, halo: int, window: int, overlap: float, least: int = 0) -> int:
    """Voxels of the windows (along one axis) that blocks of ``block`` read with ``halo``, and at least ``least`` long
    (`sparseseg.io.blocks.with_halo`), run over an axis of ``size``."""
    reads = Counter(
        min(size, max(least, min(size, start + block + halo) - max(0, start - halo))) for start in range(0, size, block)
    )
    return sum(n * len(tile_starts(r, min(window, r), overlap)) * min(window, r) for r, n in reads.items())


def block_for_windows(
    shape: Sequence[int],
    windows: Sequence[Sequence[int]],
    overlaps: Sequence[Sequence[float]],
    voxels: float,
    chunks: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """The block shape whose reads hold at most ``voxels`` voxels and need the fewest window voxels over the volume.

    Each block is read with its halo (`block_halo`) on both sides (a block inside the volume;
    it is that read which takes the memory), and at least a window long where the volume is (a
    window cut short costs the network nearly the time of a whole one), and tiled by the windows of every pass
    (`inference_windows`, `window_overlaps`). A block of k steps holds exactly the k windows
    that cover it, but a block a little longer than k steps needs k + 1 of them: the lengths
    weighed per axis (at most `BLOCK_CHOICES`) are the whole axis and whole steps of each
    pass (at least the longest step), or whole ``chunks`` of the output where it has chunks.
    Of the shapes within 0.5 % of the fewest window voxels, the largest is taken; where none
    fits in ``voxels``, the smallest.
    """
    shape = tuple(int(s) for s in shape)
    if np.prod(shape, dtype=float) <= voxels:
        return shape
    lengths = []
    for i, size in enumerate(shape):
        steps = sorted({tile_step(int(w[i]), o[i]) for w, o in zip(windows, overlaps)})
        units = steps if chunks is None else [int(chunks[i])]
        least = steps[-1] if chunks is None else int(chunks[i])
        found = sorted({size} | {m for u in units for m in range(u, size, u) if m >= least})
        if len(found) > BLOCK_CHOICES:
            found = sorted({found[int(round(j))] for j in np.linspace(0, len(found) - 1, BLOCK_CHOICES)})
        lengths.append(found)

    halos = [[block_halo([b] * 3, windows, overlaps)[i] for b in lengths[i]] for i in range(3)]
    extent = window_extent(windows)  # no read is shorter (`sparseseg.io.blocks.with_halo`)

    def along(i: int, w: Sequence[int], o: Sequence[float]) -> np.ndarray:
        return np.array(
            [_window_voxels(shape[i], b, h, int(w[i]), o[i], extent[i]) for b, h in zip(lengths[i], halos[i])],
            dtype=float,
        )

    reads = [
        np.array([b if b >= shape[i] else min(shape[i], b + 2 * h) for b, h in zip(lengths[i], halos[i])], dtype=float)
        for i in range(3)
    ]
    cost = sum(np.einsum("i,j,k->ijk", *[along(i, w, o) for i in range(3)]) for w, o in zip(windows, overlaps))
    size = np.einsum("i,j,k->ijk", *[np.asarray(v, dtype=float) for v in lengths])
    cost[np.einsum("i,j,k->ijk", *reads) > voxels] = np.inf
    if not np.isfinite(cost).any():
        return tuple(int(v[0]) for v in lengths)
    near = cost <= cost.min() * 1.005
    best = np.unravel_index(np.argmax(np.where(near, size, -1)), size.shape)
    return tuple(int(lengths[i][best[i]]) for i in range(3))


#: Chunk shape (z, y, x) of a chunked output (Zarr, OME-Zarr, HDF5) where no window steps along an axis: the io
#: package's default.
OUTPUT_CHUNKS = io_base.OUTPUT_CHUNKS


def window_chunks(
    shape: Sequence[int],
    windows: Sequence[Sequence[int]],
    overlaps: Sequence[Sequence[float]],
    default: Sequence[int] = OUTPUT_CHUNKS,
) -> tuple[int, int, int]:
    """Chunks for an output the windows fill: whole window steps per axis, near ``default`` in size.

    `block_for_windows` cuts a chunked output into whole chunks, and a block of whole steps of
    each pass needs no window more than the steps it holds; chunks of ``default`` length that
    do not divide the step cost up to 1.4 times the window voxels (3.5-4.2 against 3.0 per
    voxel on the 32 M-1 G voxel benchmark volumes, 168-voxel steps in 128-voxel chunks). Along
    each axis the chunk is the least common multiple of the passes' steps (the longest step
    where that exceeds twice ``default``), repeated to come nearest ``default``; where a
    window spans the whole axis, ``default``. Never longer than the axis.

    Where every pass's windows meet edge to edge along an axis (no overlap, so no halo), a
    block may end after any window at no cost, and the chunk there is one step, so that the
    blocks can be cut as thin as a budget needs while their other axes stay whole: a chunked
    output is then planned as a TIFF's is. Measured on the 64x704x704 benchmark volume
    (16-plane windows) and the 20x1024x1024 Drosophila stack (3-plane windows): 1.62 and
    1.44 window voxels per voxel, against 2.02 and 3.24 with chunks near ``default``.
    """
    chunks = []
    for i, size in enumerate(shape):
        lengths = [(int(w[i]), tile_step(int(w[i]), o[i])) for w, o in zip(windows, overlaps)]
        steps = {step for w, step in lengths if w < size}
        if not steps:
            chunks.append(min(int(size), int(default[i])))
            continue
        unit = math.lcm(*steps)
        unit = unit if unit <= 2 * default[i] else max(steps)
        edge_to_edge = all(w < size and step == w for w, step in lengths)  # a block may end after any window
        chunks.append(min(int(size), unit * (1 if edge_to_edge else max(1, round(default[i] / unit)))))
    return tuple(chunks)
