"""TIFF volumes: read block by block where the file allows it, or whole, and written as ImageJ hyperstacks.

Reading uses a memory map, tiles or pages where it can; writing goes whole (compressed) or
block by block (a memory-mapped file), as BigTIFF when large.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.atomic import _file_mode, _place, _room, _temp_file, _undone_on_failure
from sparseseg.io.base import FileSink, FileSource, Reference
from sparseseg.io.locations import _installed
from sparseseg.io.metadata import DEFAULT_UNIT, _channel_axis, _file_axes, _unit

#: Past this many bytes a TIFF is written as BigTIFF (classic TIFF offsets stop at 2-4 GB).
BIGTIFF_BYTES = 2_000_000_000
#: Data types an ImageJ hyperstack can hold.
IMAGEJ_DTYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "float32"))


class _PageStack:
    """The pages of a TIFF series, one (Y, X) plane each, indexed like an array: only the pages asked for are read."""

    def __init__(self, path, shape, dtype):
        import tifffile

        self.tif = tifffile.TiffFile(path)
        self.shape, self.dtype = tuple(shape), dtype
        self.lead = self.shape[:-2]

    def __getitem__(self, index):
        lead, plane = index[:-2], index[-2:]
        ranges = [range(*i.indices(n)) if isinstance(i, slice) else [i] for i, n in zip(lead, self.lead)]
        kept = [len(r) for r, i in zip(ranges, lead) if isinstance(i, slice)]
        planes = [self._page(int(np.ravel_multi_index(at, self.lead)), plane) for at in itertools.product(*ranges)]
        size = np.zeros(self.shape[-2:], dtype=np.uint8)[plane].shape
        if not planes:
            return np.zeros(kept + list(size), dtype=self.dtype)
        return np.stack(planes).reshape(kept + list(planes[0].shape))

    def _page(self, key: int, plane) -> np.ndarray:
        """Part ``plane`` of one page, copied where it is less than the page, so that the page is let go."""
        page = self.tif.asarray(key=key, series=0)
        part = page[plane]
        return part.copy() if part.size < page.size else part

    def close(self):
        tif = self.__dict__.pop("tif", None)
        if tif is not None:
            tif.close()

    __del__ = close


class _TiffZarr:
    """A TIFF series through tifffile's Zarr store (tiles or strips read as they are needed)."""

    def __init__(self, path):
        import tifffile
        import zarr

        self.tif = tifffile.TiffFile(path)
        self.store = self.tif.aszarr(series=0, level=0)
        self.array = zarr.open_array(self.store, mode="r")
        self.shape = tuple(self.array.shape)

    def __getitem__(self, index):
        return self.array[index]

    def close(self):
        for name in ("store", "tif"):
            handle = self.__dict__.pop(name, None)
            if handle is not None:
                handle.close()

    __del__ = close


class TiffSource(FileSource):
    """A TIFF file, read lazily where the file allows it.

    In order of preference: a memory map (uncompressed, contiguous data); tifffile's Zarr
    store for tiled pages (only the tiles a block needs; needs zarr); page by page (one page
    per plane); tifffile's Zarr store for any other layout; the whole series read at once
    (the last resort, in memory).
    """

    format = "tiff"

    def __init__(self, path):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, letters, dtype = tuple(series.shape), series.axes, series.dtype
            spacing, unit = _tiff_spacing(tif), _tiff_unit(tif)
            if series.dataoffset is not None:
                mode = "memmap"
            elif series.keyframe.is_tiled and _installed("zarr"):
                mode = "zarr"  # only the tiles a block needs
            elif (
                len(shape) >= 3
                and tuple(series.keyframe.shape) == shape[-2:]
                and len(series.pages) == math.prod(shape[:-2])
            ):
                mode = "pages"
            else:
                mode = "zarr"
        super().__init__(path, _file_axes(shape, letters, path), shape, dtype, spacing, unit if spacing else None)
        self.mode = mode

    def _open(self):
        import tifffile

        for mode in [self.mode] + [m for m in ("zarr", "pages", "full") if m != self.mode]:
            try:
                if mode == "memmap":
                    array = tifffile.memmap(self.path, series=0, mode="r")
                elif mode == "pages":
                    array = _PageStack(self.path, self.file_shape, self.dtype)
                elif mode == "zarr":
                    if not _installed("zarr"):
                        continue
                    array = _TiffZarr(self.path)
                else:
                    array = tifffile.imread(self.path, series=0)
            except (ValueError, TypeError, OSError, ImportError, NotImplementedError):
                if mode == "full":
                    raise
                continue
            if tuple(array.shape) != self.file_shape:
                closing = getattr(array, "close", None)
                if callable(closing) and not isinstance(array, np.ndarray):
                    closing()
                continue
            self.mode = mode
            return array
        raise InputError(f"{self.path}: cannot read")


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, float, float] | None, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        spacing = _tiff_spacing(tif)
        unit = _tiff_unit(tif) if spacing else None
    if data.ndim == 4:
        data = np.moveaxis(data, _channel_axis(axes, data.shape, path), 0)
    return data, spacing, unit


def _tiff_spacing(tif) -> tuple[float, float, float] | None:
    page = tif.pages[0]
    z = None
    if tif.imagej_metadata:
        z = tif.imagej_metadata.get("spacing")
    elif tif.shaped_metadata:
        z = tif.shaped_metadata[0].get("spacing")
    resolution = []
    for name in ("YResolution", "XResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        resolution.append(denominator / numerator if numerator else None)
    y, x = resolution
    if z is None or y is None or x is None:
        return None
    spacing = (float(z), float(y), float(x))
    # A TIFF without a real calibration says 1 pixel per unit on every axis: treat that as unknown.
    return None if spacing == (1.0, 1.0, 1.0) else spacing


def _tiff_unit(tif) -> str | None:
    if tif.imagej_metadata:
        return _unit(tif.imagej_metadata.get("unit"))
    if tif.shaped_metadata:
        return _unit(tif.shaped_metadata[0].get("unit"))
    return None


def _tiff_layout(shape, dtype, spacing, unit) -> tuple[dict, bool]:
    """How a (Z, Y, X) or (C, Z, Y, X) array is written as TIFF: tifffile's arguments, and whether C moves after Z.

    An ImageJ hyperstack (axes ZYX or ZCYX on disk) with the voxel size as ImageJ keeps it:
    x and y in the resolution tags, z as ``spacing`` and the unit in the ImageJ description,
    so that Fiji shows them. Where the data do not fit ImageJ's format (a dtype other than
    uint8, uint16, int16 or float32, or more than `BIGTIFF_BYTES`, which is then written as
    BigTIFF), the file is a plain tifffile TIFF (BigTIFF if large) with axes ZYX or CZYX: x and
    y in the resolution tags, z and the unit only in tifffile's JSON description, which Fiji
    (Bio-Formats) does not read; sparseseg and tifffile read all three back.
    """
    dtype = np.dtype(dtype)
    big = math.prod(shape) * dtype.itemsize > BIGTIFF_BYTES
    imagej = not big and dtype in IMAGEJ_DTYPES
    four = len(shape) == 4
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    if imagej:
        kwargs["imagej"] = True
        kwargs["metadata"] = {"axes": "ZCYX" if four else "ZYX"}
    else:
        kwargs["bigtiff"] = big
        kwargs["metadata"] = {"axes": "CZYX" if four else "ZYX"}
    if spacing is not None:
        z, y, x = spacing
        kwargs["resolution"] = (1.0 / x, 1.0 / y)  # tifffile: X, then Y
        kwargs["metadata"].update(spacing=z, unit=unit or DEFAULT_UNIT)
    return kwargs, imagej and four


def _write_tiff(path: Path, data: np.ndarray | None, spacing, unit=None, *, shape=None, dtype=None) -> None:
    """Write ``data`` (compressed), or with ``data`` None an empty uncompressed file of ``shape`` and ``dtype`` to
    memory-map."""
    import tifffile

    shape = tuple(data.shape if data is not None else shape)
    dtype = np.dtype(data.dtype if data is not None else dtype)
    kwargs, zcyx = _tiff_layout(shape, dtype, spacing, unit)
    if data is None:
        disk = (shape[1], shape[0]) + shape[2:] if zcyx else shape
        tifffile.imwrite(path, shape=disk, dtype=dtype, **kwargs)
        return
    if zcyx:
        data = np.moveaxis(data, 0, 1)
    tifffile.imwrite(path, np.ascontiguousarray(data), compression="zlib", **kwargs)


class TiffSink(FileSink):
    """A TIFF written block by block into a memory-mapped temporary file beside it (no volume-sized array in memory).

    The layout is `_tiff_layout`'s: an ImageJ hyperstack, or a BigTIFF past `BIGTIFF_BYTES`.
    The file is uncompressed (a memory map needs it so); `write_volume` writes a whole array
    compressed. The disk must have room for the whole file, checked at the start. It pickles
    (each process maps the same file), but a Zarr output is the one made for several writers.
    """

    def __init__(self, path, shape, dtype, reference: Reference):
        super().__init__(path, shape, dtype)
        _room(self.path, math.prod(self.shape) * self.dtype.itemsize)
        self.zcyx = _tiff_layout(self.shape, self.dtype, reference.spacing, reference.unit)[1]
        self.tmp = _temp_file(self.path, self.path.suffix)
        with _undone_on_failure(lambda: self.tmp.unlink(missing_ok=True), self.path):
            _write_tiff(self.tmp, None, reference.spacing, reference.unit, shape=self.shape, dtype=self.dtype)

    def _write(self, zyx, block):
        import tifffile

        if self._handle is None:
            self._handle = tifffile.memmap(self.tmp, mode="r+")
        if len(self.shape) == 3:
            self._handle[zyx] = block
        elif self.zcyx:
            self._handle[zyx[0], :, zyx[1], zyx[2]] = np.moveaxis(block, 0, 1)
        else:
            self._handle[(slice(None),) + zyx] = block

    def _finish(self):
        if self._handle is not None:
            self._handle.flush()
            self._handle = None
        _file_mode(self.tmp)
        _place(self.tmp, self.path, self.overwrite)

    def _cleanup(self):
        self._handle = None
        self.tmp.unlink(missing_ok=True)
