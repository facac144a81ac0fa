"""The base classes of every format's block source and sink (`sparseseg.io.blocks.Source`, `sparseseg.io.blocks.Sink`).

A volume in a file, opened on first use and read or written block by block; each format's
module subclasses them.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.atomic import _undone_on_failure
from sparseseg.io.locations import Location, locate, stamp


def _norm(zyx, shape) -> tuple[slice, slice, slice]:
    if len(zyx) != 3:
        raise ValueError(f"expected three slices (z, y, x), got {zyx!r}")
    out = []
    for s, n in zip(zyx, shape):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError(f"blocks are read with step 1, got {s!r}")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


class _Opened:
    """A volume in a file, its handle opened on first use: shown by path, shape and dtype; pickled without the
    handle."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state


class FileSource(_Opened):
    """A volume in a file as a `sparseseg.io.blocks.Source`: (C, Z, Y, X), read block by block.

    Attributes
    ----------
    path : Path
        The volume as named.
    shape : (C, Z, Y, X)
    dtype : numpy dtype
        What the file holds (`read_raw` returns it; `read` returns float32).
    spacing, unit : the voxel size (z, y, x) and its unit, None where the file does not say.
    nifti : the nibabel image of a NIfTI file (for writing outputs in kind), else None.
    format : 'tiff', 'nifti', 'zarr', 'ome-zarr' or 'hdf5'.
    channels : whether the file has a channel axis (a 3D file is read as one channel).

    A source opens its file on the first read and can be pickled (for worker processes):
    each process then opens the file for itself. ``close`` lets it go.
    """

    format = ""
    nifti = None
    #: What the file's library said on opening: a warning at the first read, or part of the error where it fails.
    said: list[str] = []

    def __init__(self, path, axes: str, file_shape, dtype, spacing=None, unit=None):
        self.path = Path(path)
        self.axes = axes  # the file's axes in its order: C, Z, Y, X, and T (one point, dropped)
        self.file_shape = tuple(int(n) for n in file_shape)
        if min(self.file_shape, default=0) < 1:
            raise InputError(f"{self.path}: expected a 3D volume (Z, Y, X), got an array of shape {self.file_shape}")
        sizes = dict(zip(axes, self.file_shape))
        self.shape = (sizes.get("C", 1), sizes["Z"], sizes["Y"], sizes["X"])
        self.channels = "C" in axes
        self.dtype = np.dtype(dtype)
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.unit = unit
        self._handle = None
        self._location = locate(self.path)
        self._stamp = _stamp(self._location)

    def _open(self):
        raise NotImplementedError

    @property
    def locations(self) -> tuple[Location, ...]:
        """Where the volume read lies (one `sparseseg.io.locations.Location`), located once on opening."""
        return (self._location,)

    @property
    def array(self):
        """The file's data as an array-like (memory map, proxy, Zarr array, dataset), opened on first use."""
        if self._handle is None:
            self._handle = self._open()
        return self._handle

    def close(self) -> None:
        handle, self._handle = self._handle, None
        closing = getattr(handle, "close", None)
        if callable(closing) and not isinstance(handle, np.ndarray):
            closing()

    def read_raw(self, zyx) -> np.ndarray:
        """The (C, z, y, x) block at ``zyx`` in the file's dtype; an `InputError` where the file changed or vanished
        since it was opened (a Zarr store deleted mid-run would otherwise read as its fill value)."""
        if _stamp(self._location) != self._stamp:
            raise InputError(
                f"'{self.path}': changed or vanished while it was being read; run again on a volume that "
                "stays as it is until the run ends"
            )
        zyx = _norm(zyx, self.shape[1:])
        index = []
        for axis in self.axes:
            if axis == "T":
                index.append(0)
            elif axis == "C":
                index.append(slice(None))
            else:
                index.append(zyx["ZYX".index(axis)])
        try:
            block = np.asarray(self.array[tuple(index)])
        except InputError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, EOFError, zlib.error) as exc:
            said = _with([f"{type(exc).__name__}: {exc}"] + self.said)
            raise InputError(f"{self.path}: cannot read ({said})") from exc
        if self.said:  # the file reads: what its library said on opening is a warning, said once
            logging.getLogger("sparseseg").warning("%s: read with warnings (%s)", self.path, _with(self.said))
            self.said = []
        order = [a for a in self.axes if a != "T"]
        if "C" not in order:
            block, order = block[None], ["C"] + order
        return block.transpose([order.index(a) for a in "CZYX"])

    def read(self, zyx) -> np.ndarray:
        """The (C, z, y, x) float32 block at ``zyx``; NaN or Inf values are refused."""
        block = np.asarray(self.read_raw(zyx), dtype=np.float32)
        if not np.issubdtype(self.dtype, np.integer) and not np.isfinite(block).all():
            raise InputError(f"{self.path}: contains NaN or Inf values")
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _with(messages: list[str]) -> str:
    """Messages in one line, each once."""
    return "; ".join(dict.fromkeys(m.strip()[:160] for m in messages if m.strip()))


def _stamp(path) -> list | None:
    """`sparseseg.io.locations.stamp` (what says that an input is still the one read), or None where it is gone."""
    try:
        return stamp(path)
    except OSError:
        return None


class FileSink(_Opened):
    """An output written block by block, a `sparseseg.io.blocks.Sink`: nothing is visible under its name before
    `finish`.

    ``write(zyx, block)`` takes a (Z, Y, X) block, or (C, Z, Y, X) for a 4D output;
    ``finish()`` makes the output visible and returns its path; ``abort()`` removes what was
    written. Used as a context manager, a sink that was not finished is aborted. A failed
    write or finish (a full disk) raises a one-line `InputError` and leaves nothing behind.
    ``chunks`` is the (z, y, x) chunk shape where the output is chunked (blocks aligned to it
    are written without reading back), else None.
    """

    chunks: tuple[int, int, int] | None = None
    #: Whether `finish` may replace what is at the path then; without it, whatever another run put there meanwhile is
    #: kept and `finish` refuses (set by `sparseseg.io.create_sink`).
    overwrite: bool = False

    def __init__(self, path, shape, dtype):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.done = False
        self._handle = None

    @property
    def _lead(self) -> tuple:
        return (slice(None),) * (len(self.shape) - 3)

    def write(self, zyx, block: np.ndarray) -> None:
        if self.done:
            raise RuntimeError(f"{self.path}: written to after finish() or abort()")
        zyx = _norm(zyx, self.shape[-3:])
        try:
            self._write(zyx, np.asarray(block))
        except OSError as exc:
            self.abort()
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc

    def finish(self) -> Path:
        if self.done:
            raise RuntimeError(f"{self.path}: finish() after finish() or abort()")
        with _undone_on_failure(self.abort, self.path):
            self._finish()
        self.done = True
        return self.path

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._cleanup()

    def release(self) -> None:
        """Let go of the sink before its first block (a setup that failed): what it made is removed."""
        self.abort()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()

    def _write(self, zyx, block):
        raise NotImplementedError

    def _finish(self):
        raise NotImplementedError

    def _cleanup(self):
        raise NotImplementedError


#: Chunks of a chunked output where no other are asked for (z, y, x).
OUTPUT_CHUNKS = (32, 128, 128)


def _default_chunks(shape) -> tuple[int, ...]:
    """Chunks of at most `OUTPUT_CHUNKS` voxels (32 x 128 x 128), one channel each."""
    spatial = tuple(min(n, c) for n, c in zip(shape[-3:], OUTPUT_CHUNKS))
    return (1,) * (len(shape) - 3) + spatial


class Reference:
    """What an output takes from its input (``reference`` of `sparseseg.io.write_volume` and
    `sparseseg.io.create_sink`): voxel size, its unit, a NIfTI header."""

    def __init__(self, spacing=None, unit=None, nifti=None):
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.unit, self.nifti = unit, nifti


def _reference(reference, spacing=None) -> Reference:
    return Reference(
        spacing if spacing is not None else getattr(reference, "spacing", None),
        getattr(reference, "unit", None),
        getattr(reference, "nifti", None),
    )
