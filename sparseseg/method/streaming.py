"""The network over a volume of any size, block by block, in bounded memory.

Each block of the plan (`sparseseg.io.blocks.plan_blocks`) is read from the source with the
halo its windows' overlap needs (`sparseseg.method.planning.block_halo`), normalised with
statistics taken once from a sample, run through the Gaussian sliding window (one pass per
training patch shape, averaged), cropped and handed to ``write``. The memory is one block
and its halo, whatever the volume; on CUDA only the block is on the device. A volume that
fits one block takes the same steps as it always did, so small volumes give the results
they gave before blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sparseseg.errors import InputError
from sparseseg.io.blocks import Block, Source, plan_blocks, with_halo
from sparseseg.method.inputs import NetworkInputs, network_image, raw_inputs
from sparseseg.method.planning import block_for_windows, block_halo, inference_windows, window_extent, window_overlaps
from sparseseg.method.preprocess import normalise_with
from sparseseg.method.sliding_window import predict_probabilities

#: Memory for one block read with its halo, and its buffers, in bytes, unless the caller says otherwise.
BLOCK_BUDGET = 512 * 2**20

#: Called after each block as ``progress(voxels_done, voxels_total)``.
BlockProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class WindowSpec:
    """The sliding windows a model runs: ``shapes``, the training patches per annotated axis, and ``patch``, the
    largest one (`sparseseg.method.planning.inference_windows`); they overlap by ``overlap`` across each pass's
    annotated planes and by ``wide_overlap`` (None: ``overlap``) along its other axes
    (`sparseseg.method.planning.window_overlaps`)."""

    shapes: Mapping[str | None, Sequence[int]]
    patch: Sequence[int]
    overlap: float = 0.5
    wide_overlap: float | None = None

    def windows(self, shape: tuple[int, int, int], multiple) -> list[tuple[int, int, int]]:
        """The windows over a volume of ``shape`` for a network of size ``multiple``."""
        return inference_windows(self.shapes, self.patch, shape, multiple)

    def overlaps(self) -> list[tuple[float, float, float]]:
        wide = self.overlap if self.wide_overlap is None else self.wide_overlap
        return window_overlaps(self.shapes, self.overlap, wide)


@dataclass(frozen=True)
class Wanted:
    """What a block-by-block run computes: ``todo(plan)`` keeps the blocks still to be written (None: all; those of a
    resumed output are not: `sparseseg.io.blocks.blocks_to_write`), ``needed(zyx)`` the voxels of a block wanted (bool,
    the block's shape; None: all)."""

    todo: Callable[[BlockPlan], Sequence[Block]] | None = None
    needed: Callable[[Block], np.ndarray] | None = None


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut for the network: the blocks, their halo, the normalisation and the sliding windows.

    Made once per volume (`plan_volume`), it is all a process needs, besides the network and
    the source, to predict any one block (`block_probabilities`), so one process and many
    workers predict the same blocks the same way.
    """

    blocks: list[Block]
    halo: tuple[int, int, int]
    stats: np.ndarray
    shapes: dict
    patch: tuple[int, int, int]
    windows: list[tuple[int, int, int]]
    overlaps: list[tuple[float, float, float]]
    inputs: NetworkInputs | None = None  # what the network reads (`sparseseg.method.inputs`; None: the raw channels)
    #: The whole source's (Z, Y, X, F) filter features (`sparseseg.method.features.VolumeFeatures.values`), where
    #: computed already for this normalisation: blocks take theirs from it instead of computing them.
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def extent(self) -> tuple[int, int, int]:
        """The longest window of any pass along each axis: a block is read at least this long where the volume is, so
        that no window is cut short (a short window costs the network nearly the time of a whole one)."""
        return window_extent(self.windows)

    @property
    def layout(self) -> dict:
        """How the plan cuts the volume, as JSON: what a resumed output must have been cut by (`blocks_to_write`)."""
        first = self.blocks[0]
        return {
            "blocks": len(self.blocks),
            "block": [s.stop - s.start for s in first],
            "halo": list(self.halo),
            "windows": [list(w) for w in self.windows],
            "overlaps": [list(o) for o in self.overlaps],
        }


def plan_volume(
    network: torch.nn.Module,
    shape: Sequence[int],
    spec: WindowSpec,
    stats: np.ndarray,
    budget: float | None = None,
    chunks: Sequence[int] | None = None,
    inputs: NetworkInputs | None = None,
) -> BlockPlan:
    """The `BlockPlan` of a (C, Z, Y, X) volume of ``shape`` for the windows of ``spec``, normalised by ``stats``
    (`sparseseg.method.preprocess.source_stats`): blocks read (halo included) in about ``budget`` bytes
    (`BLOCK_BUDGET` unless given), whole ``chunks`` of the output where it has chunks, so that blocks written at once
    by several workers never share a chunk. ``inputs``: what the network reads (None: the raw channels)."""
    channels, shape = shape[0], tuple(shape[1:])
    windows = spec.windows(shape, network.size_multiple)
    overlaps = spec.overlaps()
    inputs = inputs if inputs is not None else raw_inputs(channels)
    # input (and the features it is made of), probabilities, blend, weights
    per_voxel = 4 * ((2 if inputs.filters else 1) * inputs.count + 3 * network.head.out_channels + 1)
    block = block_for_windows(
        shape, windows, overlaps, (BLOCK_BUDGET if budget is None else budget) / per_voxel, chunks
    )
    halo = tuple(0 if b >= s else h for b, s, h in zip(block, shape, block_halo(block, windows, overlaps)))
    return BlockPlan(
        plan_blocks(shape, block), halo, stats, dict(spec.shapes), tuple(spec.patch), windows, overlaps, inputs
    )


def block_input(source: Source, read: Block, plan: BlockPlan) -> np.ndarray:
    """The network's input (`sparseseg.method.inputs.network_image`) over ``read``: the block normalised, and its
    filter features computed with their context read around it, where the network reads them."""
    shape = tuple(source.shape[1:])
    inputs = plan.inputs if plan.inputs is not None else raw_inputs(source.shape[0])
    wide, inner = with_halo(read, (inputs.halo,) * 3, shape)
    raw = source.read(wide)
    if not np.isfinite(raw).all():
        raise InputError(f"the volume holds NaN or Inf values in block {_said(wide)}")
    known = None if plan.features is None or not inputs.filters else plan.features[wide]
    image = network_image(normalise_with(raw, plan.stats), inputs, known)
    del raw, known
    return image if wide == read else np.ascontiguousarray(image[(slice(None),) + inner])


def block_probabilities(
    network: torch.nn.Module,
    source: Source,
    zyx: Block,
    plan: BlockPlan,
    *,
    device: torch.device,
    tta: bool = False,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities (K, z, y, x) of one block of the plan, before any decision (windows overlapping as planned).

    With ``needed`` (bool, the block's shape) only the windows over its voxels are run: they
    get what a full run gives them, the other voxels are not valid (see
    `sparseseg.method.sliding_window.sliding_window`).
    """
    release_freed_memory()  # what the blocks before this one freed (one process or a worker alike)
    shape = tuple(source.shape[1:])
    read, crop = with_halo(zyx, plan.halo, shape, plan.extent)
    image = block_input(source, read, plan)
    if needed is not None:
        widened = np.zeros(image.shape[1:], dtype=bool)
        widened[crop] = needed
        needed = widened
    probabilities = None
    passes = inference_windows(plan.shapes, plan.patch, image.shape[1:], network.size_multiple)
    try:
        for window, overlaps in zip(passes, plan.overlaps):
            p = predict_probabilities(network, image, window, device, overlaps, tta=tta, needed=needed)
            probabilities = p if probabilities is None else np.add(probabilities, p, out=probabilities)
    except torch.OutOfMemoryError as exc:
        raise InputError(
            "out of GPU memory: lower patch or batch_size (or use the CPU)", param="device", value="cuda"
        ) from exc
    probabilities /= len(passes)
    return probabilities[(slice(None),) + crop]


def run_blocks(
    network: torch.nn.Module,
    source: Source,
    plan: BlockPlan,
    write: Callable[[Block, np.ndarray], None],
    *,
    device: torch.device,
    tta: bool = False,
    progress: BlockProgress | None = None,
    wanted: Wanted = Wanted(),
) -> list[tuple[int, int, int]]:
    """Class probabilities (K, z, y, x) of every block of ``plan`` (`plan_volume` of ``source``) that ``wanted`` keeps,
    before any decision, handed to ``write(zyx, p)``.

    Blocks ``wanted.todo`` leaves out count as done. Where ``wanted.needed`` says which voxels of a block are wanted,
    only the windows over them are run, so that those voxels get what a whole run gives them and the others are not
    valid, and a block without any is not written. Returns the windows of the volume.
    """
    blocks = plan.blocks if wanted.todo is None else wanted.todo(plan)
    total = int(np.prod(source.shape[1:]))
    done = total - sum(voxels(zyx) for zyx in blocks)
    for zyx in blocks:
        voxel_mask = None if wanted.needed is None else wanted.needed(zyx)
        if voxel_mask is None or voxel_mask.any():
            write(zyx, block_probabilities(network, source, zyx, plan, device=device, tta=tta, needed=voxel_mask))
        done += voxels(zyx)
        if progress:
            progress(done, total)
    return plan.windows


def release_freed_memory() -> bool:
    """Hand the memory freed since the last call back to the operating system, where the C library allows it.

    glibc keeps freed memory in its heap for reuse, and a heap reused by windows and blocks of
    changing sizes fragments and grows block after block; ``malloc_trim`` returns its free
    pages. Called before each block (`block_probabilities`). Returns whether anything could be asked (glibc only).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim


def voxels(zyx: Block) -> int:
    """Voxels in a block."""
    return int(np.prod([s.stop - s.start for s in zyx]))


def _said(zyx: Block) -> str:
    return "z,y,x " + " ".join(f"{s.start}:{s.stop}" for s in zyx)
