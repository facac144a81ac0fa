"""One block path for every volume size: sources, sinks and the block plan (numpy only).

A `Source` is a (C, Z, Y, X) volume that is read block by block; a `Sink` is an output
written block by block, that becomes visible only when it is finished. A numpy array is a
source too (`ArraySource`), and an array in memory a sink (`ArraySink`), which is what a
small volume and the tests use. `plan_blocks` tiles a volume into blocks, `with_halo`
widens one by the context a sliding window needs. Formats provide their own sources and
sinks in `sparseseg.io`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sparseseg.errors import InputError, Interrupted

Block = tuple[slice, slice, slice]


class Source(Protocol):
    """A (C, Z, Y, X) volume read block by block."""

    shape: tuple[int, int, int, int]
    spacing: tuple[float, float, float] | None

    def read(self, zyx: Block) -> np.ndarray:
        """The (C, z, y, x) float32 block at ``zyx``."""


class Sink(Protocol):
    """An output written block by block; nothing is visible under its name before `finish`."""

    def write(self, zyx: Block, block: np.ndarray) -> None:
        """Write a (Z, Y, X) block, or (C, Z, Y, X) for several channels, at ``zyx``."""

    def finish(self):
        """Make the output visible (atomically, where it is a file) and return where it is."""

    def abort(self) -> None:
        """Remove whatever was written: the output does not appear."""


@dataclass
class ArraySource:
    """A numpy (C, Z, Y, X) array as a `Source`."""

    data: np.ndarray
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.data.ndim != 4:
            raise ValueError(f"expected a (C, Z, Y, X) array, got shape {self.data.shape}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.data.shape)

    def read(self, zyx: Block) -> np.ndarray:
        return np.asarray(self.data[(slice(None),) + tuple(zyx)], dtype=np.float32)


@dataclass
class ArraySink:
    """An array in memory as a `Sink`: ``sink.data`` holds what was written."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray = field(init=False)

    def __post_init__(self):
        self.data = np.zeros(self.shape, dtype=self.dtype)

    def write(self, zyx: Block, block: np.ndarray) -> None:
        lead = (slice(None),) * (self.data.ndim - 3)
        self.data[lead + tuple(zyx)] = block

    def finish(self) -> np.ndarray:
        return self.data

    def abort(self) -> None:
        pass


@contextlib.contextmanager
def all_or_nothing(*sinks: Sink | None):
    """Finish every sink when the ``with`` block ends well; abort them all if it fails (None entries are skipped).

    Ctrl-C (KeyboardInterrupt) in the block is the exception: where every sink is resumable
    (a `sparseseg.io.partial.PartialSink` given a key) and holds at least one block written
    whole, they are all kept, unfinished, and `Interrupted` says where, so that the same run
    with ``resume`` goes on from them.
    """
    sinks = [s for s in sinks if s is not None]
    try:
        yield
    except KeyboardInterrupt:
        kept = _kept(sinks)
        if kept is None:
            _abort(sinks)
            raise
        raise kept from None
    except BaseException:
        _abort(sinks)
        raise
    try:
        for sink in sinks:
            sink.finish()
    except BaseException:
        _abort(sinks)
        raise


def _abort(sinks) -> None:
    for sink in sinks:
        sink.abort()


def _kept(sinks) -> Interrupted | None:
    """Keep every sink, where all can be resumed and hold a block in common; what to tell the user (None: nothing
    kept)."""
    if not sinks or not all(getattr(s, "resumable", False) for s in sinks):
        return None
    done = set.intersection(*(s.marked() for s in sinks))
    if not done:
        return None
    total = (sinks[0].layout or {}).get("blocks")
    return Interrupted(len(done), total, [s.keep() for s in sinks])


def blocks_to_write(blocks: Sequence[Block], layout: dict, *sinks: Sink | None) -> list[Block]:
    """The blocks of a plan, in order, less those that resumed sinks hold whole already (all of them for other sinks).

    ``layout`` (JSON-able) is the block plan: each sink records it before its first block,
    and one taken up from an interrupted run must hold blocks of the same plan, else all are
    let go, left as they were, and an `InputError` of parameter ``resume`` says so.
    """
    sinks = [s for s in sinks if s is not None]
    if not sinks or not all(getattr(s, "resumable", False) for s in sinks):
        return list(blocks)
    if not all(s.check_layout(layout) for s in sinks):
        for sink in sinks:
            sink.release()
        raise InputError(
            "the interrupted run cut the volume into other blocks (another sparseseg or block size), "
            "so its output is not taken up; run without --resume",
            param="resume",
            value=str(getattr(sinks[0], "path", "")),
        )
    done = set.intersection(*(s.begin(layout) for s in sinks))
    return [zyx for zyx in blocks if block_name(zyx) not in done]


def mark_written(zyx: Block, *sinks: Sink | None) -> None:
    """Mark block ``zyx`` written whole in every resumable sink, once its data is in all of them."""
    for sink in sinks:
        if getattr(sink, "mark", None) is not None:
            sink.mark(zyx)


def block_name(zyx: Block) -> str:
    """A block's name: ``z0-8_y0-16_x16-32`` (what marks it written in a resumable sink)."""
    return "_".join(f"{axis}{s.start}-{s.stop}" for axis, s in zip("zyx", zyx))


def plan_blocks(shape: Sequence[int], block: Sequence[int]) -> list[Block]:
    """Tile a (Z, Y, X) volume into blocks of at most ``block``, in order (z slowest); the last ones may be smaller."""
    if len(shape) != 3 or len(block) != 3 or min(block) < 1:
        raise ValueError(f"need a 3D shape and a block of three sizes >= 1, got {tuple(shape)} and {tuple(block)}")
    starts = [range(0, s, b) for s, b in zip(shape, block)]
    return [
        tuple(slice(o, min(o + b, s)) for o, b, s in zip(origin, block, shape)) for origin in itertools.product(*starts)
    ]


def with_halo(
    zyx: Block, halo: Sequence[int], shape: Sequence[int], least: Sequence[int] = (0, 0, 0)
) -> tuple[Block, Block]:
    """The block widened by ``halo`` voxels per axis (inside the volume), and where ``zyx`` lies in it.

    The read is at least ``least`` voxels long along each axis where the volume is: a short block
    at the volume's edge reads further in, so that a window of that length fits it whole.
    """
    read = []
    for s, h, n, m in zip(zyx, halo, shape, least):
        start, stop = max(0, s.start - h), min(n, s.stop + h)
        start = max(0, min(start, stop - m))
        read.append(slice(start, min(n, max(stop, start + m))))
    read = tuple(read)
    crop = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(zyx, read))
    return read, crop


def block_shape(
    shape: Sequence[int], window: Sequence[int], bytes_per_voxel: float, budget: float
) -> tuple[int, int, int]:
    """Blocks of about ``budget`` bytes: whole planes of the volume where they fit, else tiles of whole windows.

    Each axis is a whole number of ``window`` lengths (or the whole axis), so that windows
    tile a block as they tile the volume; z is cut first, then y, then x.
    """
    block = list(shape)
    for axis in range(3):
        voxels = budget / bytes_per_voxel
        if np.prod(block) <= voxels:
            break
        rest = np.prod([b for i, b in enumerate(block) if i != axis])
        fit = max(int(window[axis]), int(voxels // rest) // int(window[axis]) * int(window[axis]))
        block[axis] = min(block[axis], fit)
    return tuple(int(b) for b in block)
