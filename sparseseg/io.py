"""Reading and writing volumes: TIFF, NIfTI, Zarr, OME-Zarr and HDF5. The only module that touches files.

Inside sparseseg every volume is a numpy array with axes (Z, Y, X), or (C, Z, Y, X) for
several channels, and a voxel size ``spacing`` as (z, y, x). A volume is read whole
(`read_volume`, `read_image`) or block by block (`open_source`, a `sparseseg.blocks.Source`),
and written whole (`write_volume`) or block by block (`create_sink`, a `sparseseg.blocks.Sink`).

How a volume is named:

- ``vol.tif``, ``vol.tiff``: a 3D TIFF, or a 4D one with a channel axis. Written as an ImageJ
  hyperstack, so that Fiji shows the voxel size (BigTIFF past about 2 GB: see `_tiff_layout`).
- ``vol.nii``, ``vol.nii.gz``: NIfTI. Arrays are stored (X, Y, Z) on disk, so they are
  transposed on reading and back on writing, and written with the affine and header of the
  input they came from.
- ``vol.zarr``, ``vol.zarr/path/in/group``: a Zarr array (Zarr format 2 or 3).
- ``img.ome.zarr`` (or any Zarr group with NGFF ``multiscales`` metadata, 0.4 or 0.5): the
  image at its full-resolution level. As an output, a new NGFF image with a scale pyramid;
  ``img.ome.zarr/labels/NAME`` writes NGFF labels into an existing image.
- ``file.h5:/path/to/dataset`` (also ``.hdf5``): an HDF5 dataset.

Zarr, OME-Zarr and HDF5 need the optional libraries of ``pip install "sparseseg[formats]"``.
Every library is imported where it is used, so that importing this module needs none of them.
Every output stays invisible under its name until it is complete: it is written under a
temporary name beside it and renamed at the end, so that a failed or interrupted write leaves
an earlier output as it was.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import json
import logging
import math
import os
import posixpath
import re
import secrets
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparseseg.blocks import block_shape, plan_blocks
from sparseseg.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES + ZARR_SUFFIXES + HDF5_SUFFIXES

#: What to install for Zarr, OME-Zarr and HDF5.
FORMATS_EXTRA = 'pip install "sparseseg[formats]"'
#: The NGFF version of a new OME-Zarr image (labels take the version of their image).
NGFF_VERSION = "0.4"
#: Past this many bytes a TIFF is written as BigTIFF (classic TIFF offsets stop at 2-4 GB).
BIGTIFF_BYTES = 2_000_000_000
#: Data types an ImageJ hyperstack can hold.
IMAGEJ_DTYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "float32"))
#: Memory for one block while a scale pyramid is built.
PYRAMID_BLOCK_BYTES = 64 * 2**20
#: The unit written where a voxel size is known but its unit is not (the user's --spacing).
DEFAULT_UNIT = "um"


@dataclass(frozen=True)
class Volume:
    """An array read from a file, with what is needed to write results in kind.

    Attributes
    ----------
    data : ndarray
        (Z, Y, X) or (C, Z, Y, X).
    spacing : tuple of float or None
        Voxel size (z, y, x) from the file's metadata, None where the file does not say.
    path : Path
        The file it came from (as named: ``vol.zarr/raw``, ``file.h5:/raw``).
    nifti : object or None
        The nibabel image of a NIfTI input (its affine and header are reused on writing).
    unit : str or None
        The unit of ``spacing`` ('um', 'nm', 'mm', ...), None where the file does not say.
    """

    data: np.ndarray
    spacing: tuple[float, float, float] | None
    path: Path
    nifti: Any = None
    unit: str | None = None


# --- where a volume lies ---------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a volume lies: a file, or an array or group inside a Zarr store or an HDF5 file.

    ``path`` is the name as given, ``file`` the file or the Zarr store's folder on disk,
    ``inner`` the path inside the store or file ('a/b', '' for none), ``suffix`` the format's
    suffix ('' where it is none that sparseseg reads).
    """

    path: Path
    file: Path
    inner: str
    suffix: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.inner.split("/") if p)

    @property
    def zarr(self) -> bool:
        return self.suffix in ZARR_SUFFIXES

    @property
    def container(self) -> bool:
        """A Zarr store or an HDF5 file: several volumes may lie inside one."""
        return self.suffix in ZARR_SUFFIXES + HDF5_SUFFIXES

    def labels_image(self) -> tuple[str, ...] | None:
        """For ``IMAGE/labels/NAME`` inside a Zarr store, the parts of IMAGE inside the store; else None."""
        parts = self.parts
        if self.zarr and len(parts) >= 2 and parts[-2] == "labels":
            return parts[:-2]
        return None


_HDF5_NAME = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5))(?::(?P<inner>.*))?$", re.IGNORECASE | re.DOTALL)


def locate(path: str | os.PathLike) -> Location:
    """Split ``path`` into the file or store on disk and the path inside it (see `Location`); never raises."""
    text = os.fspath(path)
    match = _HDF5_NAME.match(text)
    if match:
        file = Path(match["file"])
        inner = "/".join(p for p in (match["inner"] or "").split("/") if p)
        return Location(Path(text), file, inner, ".hdf5" if file.name.lower().endswith(".hdf5") else ".h5")
    parts = Path(text).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            suffix = ".ome.zarr" if part.lower().endswith(".ome.zarr") else ".zarr"
            return Location(Path(text), Path(*parts[: i + 1]), "/".join(parts[i + 1:]), suffix)
    name = Path(text).name.lower()
    suffix = next((s for s in TIFF_SUFFIXES + NIFTI_SUFFIXES if name.endswith(s)), "")
    return Location(Path(text), Path(text), "", suffix)


def suffix_of(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` ('.tif', '.tiff', '.nii', '.nii.gz', '.zarr', '.ome.zarr', '.h5', '.hdf5'), lower case."""
    suffix = locate(path).suffix
    if not suffix:
        raise InputError(f"{path}: unsupported file type (use one of {', '.join(SUFFIXES)})")
    return suffix


def _need(module: str, path, what: str):
    """Import an optional library, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = {"ome_zarr": "ome-zarr"}.get(module.split(".")[0], module.split(".")[0])
        raise InputError(f"{path}: {what} needs the {package} package ({FORMATS_EXTRA})") from exc


def _installed(module: str) -> bool:
    """Whether an optional library can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, AttributeError):  # a module that sys.modules holds as None (or without a spec)
        return sys.modules.get(module) is not None


def _have(module: str, path, what: str) -> None:
    """Check that an optional library is installed, without importing it."""
    if not _installed(module):
        _need(module, path, what)


# --- library messages ------------------------------------------------------------------------


@contextlib.contextmanager
def _library_messages():
    """Collect what tifffile, nibabel and others log or warn while reading, instead of printing it.

    Yields a list that fills with the messages, so that they can be folded into sparseseg's
    own one-line message.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().replace("\n", " "))

    loggers = [logging.getLogger(name) for name in ("tifffile", "nibabel", "zarr", "numcodecs", "h5py", "ome_zarr")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers[:] = [Collect()]
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message).replace("\n", " ") for w in caught)
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers[:] = handlers
            lg.propagate = propagate


def _with(messages: list[str]) -> str:
    return "; ".join(dict.fromkeys(m.strip()[:160] for m in messages if m.strip()))


# --- units and voxel sizes -------------------------------------------------------------------

_UNITS = {
    "um": "um", "µm": "um", "\u03bcm": "um", "\\u00b5m": "um", "micron": "um", "microns": "um", "micrometer": "um",
    "micrometre": "um", "nm": "nm", "nanometer": "nm", "nanometre": "nm", "mm": "mm", "millimeter": "mm",
    "millimetre": "mm", "cm": "cm", "centimeter": "cm", "centimetre": "cm", "m": "m", "meter": "m", "metre": "m",
    "angstrom": "angstrom", "å": "angstrom",
}
_NGFF_UNITS = {"um": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
               "angstrom": "angstrom"}
_MICROMETRES = {"nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "angstrom": 1e-4}


def _unit(value) -> str | None:
    """A unit as sparseseg keeps it ('um', 'nm', 'mm', ...), or None for none or one it does not know."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None
    return _UNITS.get(value.strip().lower())


def _attrs_spacing(attrs) -> tuple[tuple[float, float, float] | None, str | None]:
    """The voxel size a Zarr array's or HDF5 dataset's attributes give, as sparseseg and common tools write it."""
    for key in ("spacing", "element_size_um", "resolution", "voxel_size"):
        value = attrs.get(key)
        try:
            spacing = tuple(float(v) for v in np.asarray(value, dtype=float).ravel())
        except (TypeError, ValueError):
            continue
        if len(spacing) == 3 and all(math.isfinite(s) and s > 0 for s in spacing):
            return spacing, ("um" if key == "element_size_um" else _unit(attrs.get("unit")))
    return None, None


# --- sources: a volume read block by block -------------------------------------------------------


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


class FileSource:
    """A volume in a file as a `sparseseg.blocks.Source`: (C, Z, Y, X), read block by block.

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def _open(self):
        raise NotImplementedError

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
        """The (C, z, y, x) block at ``zyx`` in the file's dtype."""
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
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise InputError(f"{self.path}: cannot read ({exc})") from exc
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


def _channel_axis(axes: str, shape: tuple[int, ...], path) -> int:
    for name in "CS":
        if name in axes:
            return axes.index(name)
    if shape[0] <= 16:
        return 0
    if shape[-1] <= 16:
        return len(shape) - 1
    raise InputError(f"{path}: 4D volume with axes {axes!r} and shape {shape}: cannot tell which axis holds channels")


def _file_axes(shape: tuple[int, ...], letters: str, path) -> str:
    """The axes of a 3D or 4D array whose file names them loosely: 'ZYX', or with a channel axis 'C' somewhere."""
    if len(shape) == 3:
        return "ZYX"
    if len(shape) == 4:
        axes = list("ZYX")
        axes.insert(_channel_axis(letters, shape, path), "C")
        return "".join(axes)
    raise InputError(f"{path}: expected a 3D volume (Z, Y, X), got an array of shape {tuple(shape)}")


_AXIS_NAMES = {"z": "Z", "y": "Y", "x": "X", "c": "C", "ch": "C", "channel": "C", "channels": "C", "t": "T", "time": "T"}


def _named_axes(names, shape, path, strict: bool = False) -> str | None:
    """The axes of an array whose file names each axis (Zarr dimension names, NGFF axes, HDF5 dimension labels).

    An axis of one point that is not z, y, x or c (a time point) is dropped. Returns None where
    the names do not say (``strict``: raises).
    """
    letters = []
    for name, n in zip(names, shape):
        letter = _AXIS_NAMES.get(str(name).strip().lower()) if name is not None else None
        if letter is None and n == 1:
            letter = "T"
        letters.append(letter)
    spatial = [a for a in letters if a and a in "ZYX"]
    if None in letters or sorted(spatial) != ["X", "Y", "Z"] or letters.count("C") > 1:
        if strict:
            raise InputError(f"{path}: axes {list(names)} with shape {tuple(shape)}: need z, y and x (and at most c)")
        return None
    for letter, name, n in zip(letters, names, shape):
        if letter == "T" and n != 1:
            raise InputError(f"{path}: axis {name!r} has {n} points; sparseseg reads one (Z, Y, X) volume, give one time point")
    return "".join(letters)


# TIFF


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
        planes = [self.tif.asarray(key=int(np.ravel_multi_index(at, self.lead)), series=0)[plane]
                  for at in itertools.product(*ranges)]
        size = np.zeros(self.shape[-2:], dtype=np.uint8)[plane].shape
        if not planes:
            return np.zeros(kept + list(size), dtype=self.dtype)
        return np.stack(planes).reshape(kept + list(planes[0].shape))

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
            elif len(shape) >= 3 and tuple(series.keyframe.shape) == shape[-2:] and len(series.pages) == math.prod(shape[:-2]):
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


# NIfTI


class NiftiSource(FileSource):
    """A NIfTI file through nibabel's array proxy: slicing the proxy reads only that part (a .nii.gz is decompressed up to it)."""

    format = "nifti"

    def __init__(self, path):
        import nibabel as nib

        image = nib.load(str(path))
        shape = tuple(image.shape)
        if len(shape) not in (3, 4):
            raise InputError(f"{path}: expected a 3D volume (Z, Y, X), got an array of shape {shape[::-1]}")
        dtype = np.asanyarray(image.dataobj[(slice(0, 1),) * len(shape)]).dtype
        spacing, unit = _nifti_spacing(image)
        self.nifti = image
        super().__init__(path, "XYZ" if len(shape) == 3 else "XYZC", shape, dtype, spacing, unit)

    def _open(self):
        return self.nifti.dataobj


def _nifti_spacing(image):
    zooms = tuple(float(v) for v in image.header.get_zooms()[:3])
    spacing = (zooms[2], zooms[1], zooms[0]) if len(zooms) == 3 else None
    unit = _unit(image.header.get_xyzt_units()[0]) if spacing else None
    return spacing, unit


def _read_nifti(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4:  # nibabel: (X, Y, Z, C) -> (C, Z, Y, X)
        data = data.transpose(3, 2, 1, 0)
    elif data.ndim == 3:
        data = data.transpose(2, 1, 0)
    spacing, _ = _nifti_spacing(image)
    return np.ascontiguousarray(data), spacing, image


# Zarr and OME-Zarr


def _zarr_meta(folder: Path) -> dict:
    """The attributes of a Zarr group or array folder, read from its JSON (format 2 or 3); {} where there are none."""
    try:
        if (folder / "zarr.json").is_file():
            return json.loads((folder / "zarr.json").read_text()).get("attributes") or {}
        if (folder / ".zattrs").is_file():
            return json.loads((folder / ".zattrs").read_text()) or {}
    except (OSError, ValueError):
        return {}
    return {}


def _zarr_kind(folder: Path) -> str | None:
    """'group' or 'array' for a Zarr node's folder (format 2 or 3), None for anything else."""
    try:
        if (folder / "zarr.json").is_file():
            return json.loads((folder / "zarr.json").read_text()).get("node_type")
    except (OSError, ValueError):
        return None
    if (folder / ".zgroup").is_file():
        return "group"
    if (folder / ".zarray").is_file():
        return "array"
    return None


def _ngff(attrs: dict) -> dict | None:
    """The NGFF metadata (0.4: the attributes themselves; 0.5: under 'ome') where it describes an image."""
    meta = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
    return meta if meta.get("multiscales") else None


def _ngff_version(meta: dict) -> str:
    return str(meta.get("version") or meta["multiscales"][0].get("version") or "0.4")


def _ngff_scale(multiscale: dict, level: int) -> list[float] | None:
    """The scale of a level (with the multiscale's own scale, where it has one), or None where none is given."""

    def scale_of(transforms):
        for t in transforms or []:
            if t.get("type") == "scale" and "scale" in t:
                return [float(s) for s in t["scale"]]
        return None

    scale = scale_of(multiscale["datasets"][level].get("coordinateTransformations"))
    overall = scale_of(multiscale.get("coordinateTransformations"))
    if scale is not None and overall is not None and len(overall) == len(scale):
        scale = [a * b for a, b in zip(scale, overall)]
    return scale


def _ngff_axis_names(multiscale: dict) -> list[str]:
    axes = multiscale.get("axes") or ["t", "c", "z", "y", "x"]  # before 0.3 the image was always 5D
    return [a.get("name") if isinstance(a, dict) else a for a in axes]


class ZarrSource(FileSource):
    """A plain Zarr array: axes from its dimension names where it has them, else (Z, Y, X) or 4D with a channel axis."""

    format = "zarr"

    def __init__(self, path, folder: Path, array):
        shape = tuple(array.shape)
        attrs = dict(array.attrs)
        names = getattr(array.metadata, "dimension_names", None) or attrs.get("_ARRAY_DIMENSIONS") or attrs.get("axes")
        axes = _named_axes(list(names), shape, path) if names and len(names) == len(shape) else None
        spacing, unit = _attrs_spacing(attrs)
        super().__init__(path, axes or _file_axes(shape, "", path), shape, array.dtype, spacing, unit)
        self.folder = Path(folder)
        self._handle = array

    def _open(self):
        import zarr

        return zarr.open_array(str(self.folder), mode="r")


class OmeZarrSource(FileSource):
    """An OME-Zarr (NGFF 0.4 or 0.5) image at its full-resolution level (datasets[0]).

    Axes come from the multiscales metadata (a t axis of one point is dropped, c is the channel
    axis), the voxel size from the scale of level 0, its unit from the axes.
    """

    format = "ome-zarr"

    def __init__(self, path, folder: Path, group, meta: dict):
        multiscale = meta["multiscales"][0]
        self.version = _ngff_version(meta)
        names = _ngff_axis_names(multiscale)
        self.level = str(multiscale["datasets"][0]["path"])
        array = group[self.level]
        shape = tuple(array.shape)
        if len(names) != len(shape):
            raise InputError(f"{path}: OME-Zarr axes {names} do not match the shape {shape} of level {self.level}")
        axes = _named_axes(names, shape, path, strict=True)
        scale = _ngff_scale(multiscale, 0)
        spacing = tuple(scale[names.index(a)] for a in "zyx") if scale and len(scale) == len(names) else None
        units = {a.get("name"): a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict)}
        unit = _unit(units.get("z")) if len({units.get(a) for a in "zyx"}) == 1 else None
        super().__init__(path, axes, shape, array.dtype, spacing, unit if spacing else None)
        self.folder = Path(folder)
        self._handle = array

    def _open(self):
        import zarr

        return zarr.open_array(str(self.folder / self.level), mode="r")


def _open_zarr(loc: Location) -> FileSource:
    zarr = _need("zarr", loc.path, "reading Zarr")
    if not loc.file.exists():
        raise InputError(f"{loc.path}: no such Zarr store")
    if not loc.file.is_dir():
        raise InputError(f"{loc.path}: {loc.file} is a file, not a Zarr store (a folder)")
    folder = loc.file.joinpath(*loc.parts)
    if not folder.is_dir():
        raise InputError(f"{loc.path}: no array or group {loc.inner!r} in {loc.file}")
    node = zarr.open(str(folder), mode="r")
    if isinstance(node, zarr.Array):
        return ZarrSource(loc.path, folder, node)
    meta = _ngff(dict(node.attrs))
    if meta is None and "bioformats2raw.layout" in _zarr_meta(folder) and (folder / "0").is_dir():
        folder, node = folder / "0", node["0"]  # bioformats2raw: the first image lies in 0/
        meta = _ngff(dict(node.attrs))
    if meta is None:
        arrays = sorted(node.array_keys())
        hint = f" (it holds {', '.join(arrays[:5])})" if arrays else ""
        raise InputError(f"{loc.path}: a Zarr group without OME-Zarr image metadata; name an array inside it{hint}")
    return OmeZarrSource(loc.path, folder, node, meta)


# HDF5


def _h5_datasets(h5file) -> list[str]:
    import h5py

    found = []
    h5file.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return found


class Hdf5Source(FileSource):
    """An HDF5 dataset (``file.h5:/path``; ``file.h5`` alone where the file holds one dataset).

    Axes from its dimension labels or an ``axes`` attribute where it has them, else (Z, Y, X)
    or 4D with a channel axis; the voxel size from ``element_size_um`` (micrometres, as Fiji
    and ilastik write it) or ``spacing``.
    """

    format = "hdf5"

    def __init__(self, loc: Location):
        h5py = _need("h5py", loc.path, "reading HDF5")
        if loc.file.is_dir():
            raise InputError(f"{loc.path}: is a folder, not a file")
        if not loc.file.is_file():
            raise InputError(f"{loc.path}: no such file")
        with h5py.File(loc.file, "r") as f:
            datasets = _h5_datasets(f)
            listing = f" (it holds {', '.join(datasets[:5])})" if datasets else " (it holds no dataset)"
            if loc.inner:
                name = "/" + loc.inner
            elif len(datasets) == 1:
                name = datasets[0]
            else:
                raise InputError(f"{loc.path}: name the dataset, as {loc.file}:/path/to/dataset{listing}")
            node = f.get(name)
            if node is None:
                raise InputError(f"{loc.path}: no dataset {name} in {loc.file}{listing}")
            if not isinstance(node, h5py.Dataset):
                raise InputError(f"{loc.path}: {name} is a group, not a dataset{listing}")
            shape, dtype = tuple(node.shape), node.dtype
            labels = [d.label for d in node.dims]
            given = node.attrs.get("axes")
            if isinstance(given, bytes):
                given = given.decode(errors="replace")
            names = labels if all(labels) else (list(given) if isinstance(given, str) and len(given) == len(shape) else None)
            axes = _named_axes(names, shape, loc.path) if names else None
            spacing, unit = _attrs_spacing(node.attrs)
        super().__init__(loc.path, axes or _file_axes(shape, "", loc.path), shape, dtype, spacing, unit)
        self.file, self.dataset = loc.file, name
        self._h5 = None

    def _open(self):
        import h5py

        self._h5 = h5py.File(self.file, "r")
        return self._h5[self.dataset]

    def __getstate__(self):
        state = super().__getstate__()
        state["_h5"] = None
        return state

    def close(self) -> None:
        self._handle = None
        h5, self._h5 = self._h5, None
        if h5 is not None:
            h5.close()


class ChannelStack:
    """Several sources of one (Z, Y, X) shape as the channels of one `sparseseg.blocks.Source`, in order.

    The voxel size, unit, path and NIfTI header are those of the first.
    """

    format = "channels"
    channels = True

    def __init__(self, sources: Sequence[FileSource]):
        self.sources = list(sources)
        first = self.sources[0]
        self.shape = (sum(s.shape[0] for s in self.sources),) + tuple(first.shape[1:])
        self.path, self.spacing, self.unit, self.nifti = first.path, first.spacing, first.unit, first.nifti
        self.dtype = np.result_type(*(s.dtype for s in self.sources))

    def read(self, zyx) -> np.ndarray:
        return np.concatenate([s.read(zyx) for s in self.sources], axis=0)

    def read_raw(self, zyx) -> np.ndarray:
        return np.concatenate([s.read_raw(zyx) for s in self.sources], axis=0)

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _input(path) -> Location:
    """The location of an input, checked: a known format, and there."""
    loc = locate(path)
    suffix_of(path)
    if not loc.container:
        if loc.file.is_dir():
            raise InputError(f"{loc.path}: is a folder, not a file")
        if not loc.file.is_file():
            raise InputError(f"{loc.path}: no such file")
    return loc


def _open_one(loc: Location) -> FileSource:
    if loc.suffix in TIFF_SUFFIXES:
        return TiffSource(loc.path)
    if loc.suffix in NIFTI_SUFFIXES:
        return NiftiSource(loc.path)
    if loc.zarr:
        return _open_zarr(loc)
    return Hdf5Source(loc)


def _opened(loc: Location) -> FileSource:
    """Open one source, folding what the libraries say into one line."""
    with _library_messages() as messages:
        try:
            source = _open_one(loc)
            failure = None
        except InputError:
            raise
        except Exception as exc:  # a corrupt or foreign file: say which, and why
            failure = exc
    if failure is not None:
        raise InputError(f"{loc.path}: cannot read ({_with([str(failure)] + messages)})") from failure
    if messages:
        logging.getLogger("sparseseg").warning("%s: read with warnings (%s)", loc.path, _with(messages))
    return source


def _check_dtype(path, dtype) -> None:
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{path}: unsupported data type {dtype}")


def open_source(paths: str | os.PathLike | Sequence[str | os.PathLike]):
    """Open one or more volumes of the same (Z, Y, X) shape as one (C, Z, Y, X) `sparseseg.blocks.Source`.

    Nothing is read but the metadata: blocks are read as they are asked for (``read`` returns
    float32 and refuses NaN or Inf; ``read_raw`` the file's dtype). Several paths are the
    channels of one image, as in `read_image`. The source has ``.path``, ``.spacing``,
    ``.unit`` and ``.nifti`` (a NIfTI input's header), which `create_sink` uses to write
    outputs in kind.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise InputError("no input volume given")
    sources = []
    for path in paths:
        source = _opened(_input(path))
        _check_dtype(source.path, source.dtype)
        if sources and source.shape[1:] != sources[0].shape[1:]:
            raise InputError(
                f"{source.path}: shape {source.shape[1:]} differs from {sources[0].path} {sources[0].shape[1:]}; "
                "channels must have the same shape"
            )
        sources.append(source)
    return sources[0] if len(sources) == 1 else ChannelStack(sources)


# --- reading whole volumes -------------------------------------------------------------------


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume, or a 4D one with a channel axis, in any format sparseseg reads.

    Returns a `Volume` whose data is (Z, Y, X) or (C, Z, Y, X), in the file's dtype (a
    Zarr, OME-Zarr or HDF5 channel axis of one is dropped, as tifffile drops it).
    """
    loc = _input(path)
    if loc.container:
        source = _opened(loc)
        try:
            data = source.read_raw(tuple(slice(0, n) for n in source.shape[1:]))
        finally:
            source.close()
        if data.shape[0] == 1:
            data = data[0]
        return Volume(np.ascontiguousarray(data), source.spacing, loc.path, None, source.unit)
    path = loc.path
    with _library_messages() as messages:
        try:
            if loc.suffix in TIFF_SUFFIXES:
                data, spacing, unit = _read_tiff(path)
                nifti = None
            else:
                data, spacing, nifti = _read_nifti(path)
                unit = _nifti_spacing(nifti)[1]
            failure = None
        except InputError:
            raise
        except Exception as exc:  # a corrupt or foreign file: say which, and why
            failure = exc
    if failure is not None:
        raise InputError(f"{path}: cannot read ({_with([str(failure)] + messages)})") from failure
    if data.ndim not in (3, 4) or min(data.shape) < 1:
        said = f" ({_with(messages)})" if messages else ""
        raise InputError(f"{path}: expected a 3D volume (Z, Y, X), got an array of shape {data.shape}{said}")
    if messages:  # the file was read, but its reader had doubts: say so, once, in sparseseg's words
        logging.getLogger("sparseseg").warning("%s: read with warnings (%s)", path, _with(messages))
    return Volume(data, spacing, path, nifti, unit)


def read_image(paths: Sequence[str | os.PathLike]) -> Volume:
    """Read one or more volumes of the same shape as the channels of one float32 (C, Z, Y, X) image.

    Raises `InputError` for a 2D image, shapes that differ, or NaN/Inf values.
    """
    if not paths:
        raise InputError("no input volume given")
    volumes = [read_volume(p) for p in paths]
    channels = []
    for volume in volumes:
        data = volume.data if volume.data.ndim == 4 else volume.data[None]
        if channels and data.shape[1:] != channels[0].shape[1:]:
            raise InputError(
                f"{volume.path}: shape {data.shape[1:]} differs from {volumes[0].path} {channels[0].shape[1:]}; "
                "channels must have the same shape"
            )
        _check_dtype(volume.path, data.dtype)
        data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            raise InputError(f"{volume.path}: contains NaN or Inf values")
        channels.append(data)
    first = volumes[0]
    return Volume(np.concatenate(channels, axis=0), first.spacing, first.path, first.nifti, first.unit)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read a label volume (Z, Y, X). Values are checked later, by `sparseseg.labels`."""
    volume = read_volume(path)
    if volume.data.ndim != 3:
        raise InputError(f"{volume.path}: a label volume must be 3D (Z, Y, X), got shape {volume.data.shape}")
    return volume


# --- checking an output before any work --------------------------------------------------------


def check_output(path: str | os.PathLike, overwrite: bool = False, suffixes: Sequence[str] = SUFFIXES) -> Path:
    """Check before any work that ``path`` can be written: known suffix, folder exists, not there already.

    Besides files, understands ``out.zarr`` (a new store), ``store.zarr/name`` (a new array in
    an existing group), ``out.ome.zarr`` (a new image), ``IMAGE.ome.zarr/labels/NAME`` (labels
    into an existing OME-Zarr image) and ``file.h5:/path`` (a new file, or a new dataset in an
    existing one), and that the library each needs is installed.
    """
    path = Path(path)
    loc = locate(path)
    allowed = tuple(s.lower() for s in suffixes)
    if loc.container:
        if loc.suffix not in allowed:
            raise InputError(f"{path}: unsupported output type (use one of {', '.join(suffixes)})")
        if loc.zarr:
            _check_zarr_output(loc, overwrite)
        else:
            _check_hdf5_output(loc, overwrite)
        return path
    if not any(path.name.lower().endswith(s) for s in allowed):
        raise InputError(f"{path}: unsupported output type (use one of {', '.join(suffixes)})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists already (use --overwrite to replace it)")
    return path


def _check_replaceable(loc: Location, target: Path, overwrite: bool) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise InputError(f"{loc.path}: exists already (use --overwrite to replace it)")
    if not target.is_dir() or _zarr_kind(target) is None:
        raise InputError(f"{loc.path}: is not a Zarr array or group, so --overwrite does not replace it; give another name")


def _check_zarr_output(loc: Location, overwrite: bool) -> None:
    _have("zarr", loc.path, "writing Zarr")
    target = loc.file.joinpath(*loc.parts)
    image = loc.labels_image()
    if not loc.parts:  # a new store
        if not loc.file.parent.is_dir():
            raise InputError(f"{loc.path}: folder {loc.file.parent} does not exist")
        if loc.suffix == ".ome.zarr":
            _have("ome_zarr", loc.path, "writing OME-Zarr")
        _check_replaceable(loc, target, overwrite)
        return
    if not loc.file.is_dir():
        raise InputError(f"{loc.path}: Zarr store {loc.file} does not exist")
    if image is not None:  # labels into an existing image
        _have("ome_zarr", loc.path, "writing OME-Zarr labels")
        folder = loc.file.joinpath(*image)
        if _ngff(_zarr_meta(folder)) is None:
            raise InputError(f"{loc.path}: {folder} is not an OME-Zarr image (no multiscales metadata); labels/NAME goes into one")
        labels = folder / "labels"
        if labels.exists() and _zarr_kind(labels) != "group":
            raise InputError(f"{loc.path}: {labels} is not a Zarr group")
        _check_replaceable(loc, target, overwrite)
        return
    if _zarr_kind(target.parent) != "group":
        raise InputError(f"{loc.path}: {target.parent} is not a Zarr group (the group must exist)")
    _check_replaceable(loc, target, overwrite)


def _check_hdf5_output(loc: Location, overwrite: bool) -> None:
    h5py = _need("h5py", loc.path, "writing HDF5")
    if not loc.parts:
        raise InputError(f"{loc.path}: name the dataset inside the file, as {loc.file}:/segmentation")
    if loc.file.is_dir():
        raise InputError(f"{loc.path}: {loc.file} is a folder, not a file")
    if not loc.file.parent.is_dir():
        raise InputError(f"{loc.path}: folder {loc.file.parent} does not exist")
    if not loc.file.exists():
        return
    if not h5py.is_hdf5(loc.file):
        raise InputError(f"{loc.path}: {loc.file} exists and is not an HDF5 file")
    try:
        with h5py.File(loc.file, "r") as f:
            for i in range(1, len(loc.parts)):
                node = f.get("/" + "/".join(loc.parts[:i]))
                if node is not None and not isinstance(node, h5py.Group):
                    raise InputError(f"{loc.path}: {node.name} is a dataset, so nothing can lie inside it")
            node = f.get("/" + loc.inner)
            if node is not None:
                if not isinstance(node, h5py.Dataset):
                    raise InputError(f"{loc.path}: {node.name} is a group in {loc.file}, not a dataset")
                if not overwrite:
                    raise InputError(f"{loc.path}: exists already (use --overwrite to replace it)")
    except OSError as exc:
        raise InputError(f"{loc.path}: cannot open {loc.file} ({exc})") from exc


# --- writing: files renamed into place -------------------------------------------------------------


def _file_mode(path) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode a plain open() or mkdir() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    name = path.name
    suffix = next((s for s in SUFFIXES + (".png", ".json", ".pt", ".csv") if name.lower().endswith(s)), "")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        _file_mode(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: nothing is left behind, the earlier file is kept
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _into_place(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file or folder onto ``final``; an earlier ``final`` is put aside first and
    removed only once the new one is in place (it is put back if that fails)."""
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


def _room(path: Path, nbytes: int) -> None:
    """Refuse before writing a memory-mapped file that the disk cannot hold (a full disk would kill the process)."""
    try:
        stat = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if nbytes > free:
        raise InputError(f"{path}: cannot write (needs {nbytes / 1e9:.1f} GB, {free / 1e9:.1f} GB free on that disk)")


class _Reference:
    """What an output takes from its input: voxel size, its unit, a NIfTI header."""

    def __init__(self, spacing=None, unit=None, nifti=None):
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.unit, self.nifti = unit, nifti


def _reference(reference, spacing=None) -> _Reference:
    return _Reference(spacing if spacing is not None else getattr(reference, "spacing", None),
                      getattr(reference, "unit", None), getattr(reference, "nifti", None))


# TIFF


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
    """Write ``data`` (compressed), or with ``data`` None an empty uncompressed file of ``shape`` and ``dtype`` to memory-map."""
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


def _write_nifti(path: Path, data: np.ndarray, reference) -> None:
    import nibabel as nib

    array = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    like = getattr(reference, "nifti", None) if reference is not None else None
    if like is None:
        spacing = reference.spacing if reference is not None and reference.spacing else (1.0, 1.0, 1.0)
        image = nib.Nifti1Image(array, np.diag([spacing[2], spacing[1], spacing[0], 1.0]))
        unit = getattr(reference, "unit", None)
        if reference is not None and reference.spacing and unit in ("um", "mm", "m"):
            image.header.set_xyzt_units(xyz={"um": "micron", "mm": "mm", "m": "meter"}[unit])
    else:
        header = like.header.copy()
        header.set_data_dtype(array.dtype)
        image = nib.Nifti1Image(array, like.affine, header)
        image.header.set_slope_inter(1, 0)
    nib.save(image, str(path))


# --- sinks: an output written block by block -------------------------------------------------------


class FileSink:
    """An output written block by block, a `sparseseg.blocks.Sink`: nothing is visible under its name before `finish`.

    ``write(zyx, block)`` takes a (Z, Y, X) block, or (C, Z, Y, X) for a 4D output;
    ``finish()`` makes the output visible and returns its path; ``abort()`` removes what was
    written. Used as a context manager, a sink that was not finished is aborted. A failed
    write or finish (a full disk) raises a one-line `InputError` and leaves nothing behind.
    ``chunks`` is the (z, y, x) chunk shape where the output is chunked (blocks aligned to it
    are written without reading back), else None.
    """

    chunks: tuple[int, int, int] | None = None

    def __init__(self, path, shape, dtype):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.done = False
        self._handle = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

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
        try:
            self._finish()
        except OSError as exc:
            self.abort()
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.path

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._cleanup()

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


def _temp_file(final: Path, suffix: str) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    except OSError as exc:
        raise InputError(f"{final}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    return Path(tmp)


def _temp_dir(final: Path, path) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    _file_mode(tmp)
    return tmp


class TiffSink(FileSink):
    """A TIFF written block by block into a memory-mapped temporary file beside it (no volume-sized array in memory).

    The layout is `_tiff_layout`'s: an ImageJ hyperstack, or a BigTIFF past `BIGTIFF_BYTES`.
    The file is uncompressed (a memory map needs it so); `write_volume` writes a whole array
    compressed. The disk must have room for the whole file, checked at the start. It pickles
    (each process maps the same file), but a Zarr output is the one made for several writers.
    """

    def __init__(self, path, shape, dtype, reference: _Reference):
        super().__init__(path, shape, dtype)
        _room(self.path, math.prod(self.shape) * self.dtype.itemsize)
        self.zcyx = _tiff_layout(self.shape, self.dtype, reference.spacing, reference.unit)[1]
        self.tmp = _temp_file(self.path, self.path.suffix)
        try:
            _write_tiff(self.tmp, None, reference.spacing, reference.unit, shape=self.shape, dtype=self.dtype)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

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
        os.replace(self.tmp, self.path)

    def _cleanup(self):
        self._handle = None
        self.tmp.unlink(missing_ok=True)


class NiftiSink(FileSink):
    """A NIfTI output, held in memory and written on `finish` (medical volumes are small; NIfTI has no chunks to write blocks into)."""

    def __init__(self, path, shape, dtype, reference: _Reference):
        super().__init__(path, shape, dtype)
        self.reference = reference
        self.data = np.zeros(self.shape, self.dtype)

    def __getstate__(self):
        raise TypeError(f"{self.path}: a NIfTI output is written by one process; write a Zarr output from several")

    def _write(self, zyx, block):
        self.data[self._lead + zyx] = block

    def _finish(self):
        _atomic(self.path, lambda tmp: _write_nifti(tmp, self.data, self.reference))
        self.data = None

    def _cleanup(self):
        self.data = None


def _default_chunks(shape) -> tuple[int, ...]:
    """Chunks of at most 32 x 128 x 128 voxels, one channel each."""
    spatial = tuple(min(n, c) for n, c in zip(shape[-3:], (32, 128, 128)))
    return (1,) * (len(shape) - 3) + spatial


def _zarr_array(zarr, store, shape, chunks, dtype, zarr_format: int, names: list[str], attributes: dict | None = None):
    """A new Zarr array, compressed (zarr's default codec) with '/'-separated chunk keys (as NGFF asks) in both formats."""
    kwargs: dict[str, Any] = {"shape": shape, "chunks": chunks, "dtype": dtype, "fill_value": 0, "zarr_format": zarr_format,
                              "attributes": dict(attributes or {})}
    if zarr_format == 3:
        kwargs["dimension_names"] = names
    else:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        kwargs["attributes"].setdefault("_ARRAY_DIMENSIONS", names)
    if isinstance(store, tuple):
        group, name = store
        del kwargs["zarr_format"]  # the group's
        return group.create_array(name, **kwargs)
    return zarr.create_array(store=str(store), **kwargs)


class ZarrSink(FileSink):
    """A plain Zarr array: ``out.zarr`` (a new store, Zarr format 3) or ``store.zarr/name`` (in an existing group, its format).

    Chunked and compressed; blocks are written as they come into a temporary folder beside the
    target, renamed onto it on `finish`. Worker processes may write blocks of one sink (it
    pickles): give them disjoint blocks aligned to ``chunks``.
    """

    def __init__(self, loc: Location, shape, dtype, reference: _Reference, chunks=None):
        super().__init__(loc.path, shape, dtype)
        zarr = _need("zarr", loc.path, "writing Zarr")
        self.final = loc.file.joinpath(*loc.parts)
        zarr_format = 3 if not loc.parts else _zarr_format(self.final.parent)
        chunks = tuple(chunks) if chunks is not None else _default_chunks(self.shape)
        chunks = (1,) * (len(self.shape) - len(chunks)) + chunks
        self.chunks = tuple(chunks[-3:])
        attributes = {}
        if reference.spacing is not None:
            attributes = {"spacing": list(reference.spacing), "unit": reference.unit or DEFAULT_UNIT}
        names = ["c", "z", "y", "x"][-len(self.shape):]
        self.tmp = _temp_dir(self.final, loc.path)
        try:
            _zarr_array(zarr, self.tmp, self.shape, chunks, self.dtype, zarr_format, names, attributes)
        except BaseException:
            _remove(self.tmp)
            raise

    def _write(self, zyx, block):
        if self._handle is None:
            import zarr

            self._handle = zarr.open_array(str(self.tmp), mode="r+")
        self._handle[self._lead + zyx] = block

    def _finish(self):
        self._handle = None
        _into_place(self.tmp, self.final)

    def _cleanup(self):
        self._handle = None
        _remove(self.tmp)


def _zarr_format(folder: Path) -> int:
    return 3 if (folder / "zarr.json").is_file() else 2


def _ome_writer():
    """ome-zarr's writer module (it warns about its own deprecated Scaler while it is imported: not the user's business)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return importlib.import_module("ome_zarr.writer")


def _ngff_format(version: str):
    from ome_zarr.format import FormatV04, FormatV05

    return FormatV05() if str(version).startswith("0.5") else FormatV04()


def _fit(block: np.ndarray, shape) -> np.ndarray:
    """Crop or zero-pad the trailing axes of ``block`` to ``shape``."""
    block = block[tuple(slice(0, n) for n in shape)]
    if block.shape != tuple(shape):
        block = np.pad(block, [(0, n - m) for n, m in zip(shape, block.shape)])
    return block


def _downsample(source, target, ratio) -> None:
    """Fill the Zarr array ``target`` with every ``ratio``-th voxel of ``source`` along its last three axes.

    Nearest-neighbour by construction (no interpolation: labels stay labels), block by block
    in `PYRAMID_BLOCK_BYTES`, leading axes (channels) copied whole.
    """
    lead = (slice(None),) * (len(target.shape) - 3)
    per_voxel = math.prod(target.shape[:-3]) * target.dtype.itemsize
    block = block_shape(target.shape[-3:], target.chunks[-3:], per_voxel, PYRAMID_BLOCK_BYTES)
    for zyx in plan_blocks(target.shape[-3:], block):
        index = tuple(slice(s.start * r, min(s.stop * r, n), r) for s, r, n in zip(zyx, ratio, source.shape[-3:]))
        data = np.asarray(source[lead + index])
        target[lead + zyx] = _fit(data, data.shape[:-3] + tuple(s.stop - s.start for s in zyx))


def _pyramid(shape_zyx, spacing, min_size: int = 64, max_levels: int = 8) -> list[tuple[int, int, int]]:
    """Downsampling factors (z, y, x) of the levels of a new image: y and x halve each level, z too once its voxels are
    no larger than y's (isotropic where it can), until y and x fit in ``min_size``."""
    spacing = spacing or (1.0, 1.0, 1.0)
    factors = [(1, 1, 1)]
    while len(factors) < max_levels:
        fz, fy, fx = factors[-1]
        if max(math.ceil(shape_zyx[1] / fy), math.ceil(shape_zyx[2] / fx)) <= min_size:
            break
        z_small = spacing[0] * fz <= spacing[1] * fy * 1.001 and math.ceil(shape_zyx[0] / fz) > 1
        factors.append((fz * 2 if z_small else fz, fy * 2, fx * 2))
    return factors


class OmeZarrSink(FileSink):
    """A new OME-Zarr image (``out.ome.zarr``): NGFF `NGFF_VERSION` (0.4, Zarr format 2, what most viewers read), axes
    (c,) z, y, x with the voxel size and unit in the coordinate transformations.

    Level 0 is written block by block into a temporary folder beside the target; `finish`
    builds the scale pyramid from it (every other voxel, never interpolated, block by block:
    see `_pyramid`), writes the metadata with ome-zarr's writer and renames the folder into
    place. Pickles for worker processes, as `ZarrSink`.
    """

    def __init__(self, loc: Location, shape, dtype, reference: _Reference, chunks=None, version: str = NGFF_VERSION):
        super().__init__(loc.path, shape, dtype)
        zarr = _need("zarr", loc.path, "writing OME-Zarr")
        _need("ome_zarr", loc.path, "writing OME-Zarr")
        self.final = loc.file.joinpath(*loc.parts)
        self.version, self.spacing, self.unit = version, reference.spacing, reference.unit
        self.zarr_format = 3 if version.startswith("0.5") else 2
        chunks = tuple(chunks) if chunks is not None else _default_chunks(self.shape)
        self.level_chunks = (1,) * (len(self.shape) - len(chunks)) + chunks
        self.chunks = tuple(self.level_chunks[-3:])
        self.names = ["c", "z", "y", "x"][-len(self.shape):]
        self.tmp = _temp_dir(self.final, loc.path)
        try:
            group = zarr.open_group(str(self.tmp), mode="w", zarr_format=self.zarr_format)
            _zarr_array(zarr, (group, "0"), self.shape, self.level_chunks, self.dtype, self.zarr_format, self.names)
        except BaseException:
            _remove(self.tmp)
            raise

    def _write(self, zyx, block):
        if self._handle is None:
            import zarr

            self._handle = zarr.open_array(str(self.tmp / "0"), mode="r+")
        self._handle[self._lead + zyx] = block

    def _finish(self):
        import zarr

        write_multiscales_metadata = _ome_writer().write_multiscales_metadata
        self._handle = None
        group = zarr.open_group(str(self.tmp), mode="r+")
        factors = _pyramid(self.shape[-3:], self.spacing)
        spacing = self.spacing or (1.0, 1.0, 1.0)
        datasets = []
        for level, factor in enumerate(factors):
            if level:
                shape = self.shape[:-3] + tuple(math.ceil(n / f) for n, f in zip(self.shape[-3:], factor))
                chunks = self.level_chunks[:-3] + tuple(min(c, n) for c, n in zip(self.level_chunks[-3:], shape[-3:]))
                target = _zarr_array(zarr, (group, str(level)), shape, chunks, self.dtype, self.zarr_format, self.names)
                ratio = tuple(f // p for f, p in zip(factor, factors[level - 1]))
                _downsample(group[str(level - 1)], target, ratio)
            scale = [1.0] * (len(self.shape) - 3) + [s * f for s, f in zip(spacing, factor)]
            datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
        unit = _NGFF_UNITS.get(self.unit or DEFAULT_UNIT) if self.spacing is not None else None
        axes = [{"name": "c", "type": "channel"}] if len(self.shape) == 4 else []
        axes += [dict(name=a, type="space", **({"unit": unit} if unit else {})) for a in "zyx"]
        write_multiscales_metadata(group, datasets, fmt=_ngff_format(self.version), axes=axes, name=self.final.name)
        _into_place(self.tmp, self.final)

    def _cleanup(self):
        self._handle = None
        _remove(self.tmp)


class OmeLabelsSink(FileSink):
    """NGFF labels written into an existing OME-Zarr image: ``IMAGE.ome.zarr/labels/NAME``.

    The labels have the image's axes (a channel or time axis of one point), its levels and
    their coordinate transformations, its NGFF version and Zarr format, and its chunks where
    they are small; each lower level is every n-th voxel of the one above, so that the labels
    lie on the image at every level. ``image-label`` metadata is written, and NAME is added
    to the ``labels`` list of IMAGE/labels, so that napari and other viewers open the labels
    over the image. The image's own arrays and metadata are never opened for writing: only
    IMAGE/labels is written, created where it is missing (and removed again on `abort` if it
    was). Blocks go to a temporary group inside IMAGE/labels, renamed to NAME on `finish`.
    """

    def __init__(self, loc: Location, shape, dtype):
        super().__init__(loc.path, shape, dtype)
        zarr = _need("zarr", loc.path, "writing OME-Zarr labels")
        _need("ome_zarr", loc.path, "writing OME-Zarr labels")
        if len(self.shape) == 4 and self.shape[0] == 1:
            self.shape = self.shape[1:]
        if len(self.shape) != 3:
            raise InputError(f"{loc.path}: OME-Zarr labels are one (Z, Y, X) volume, not {self.shape[0]} channels")
        if not np.issubdtype(self.dtype, np.integer):
            raise InputError(f"{loc.path}: OME-Zarr labels must be integers, not {self.dtype}")
        self.image = loc.file.joinpath(*loc.labels_image())
        self.name = loc.parts[-1]
        image = zarr.open_group(str(self.image), mode="r")
        meta = _ngff(dict(image.attrs))
        if meta is None:
            raise InputError(f"{loc.path}: {self.image} is not an OME-Zarr image (no multiscales metadata)")
        self.version = _ngff_version(meta)
        self.zarr_format = _zarr_format(self.image)
        multiscale = meta["multiscales"][0]
        self.axes_meta = multiscale.get("axes")
        self.overall = multiscale.get("coordinateTransformations")
        names = _ngff_axis_names(multiscale)
        arrays = [image[str(d["path"])] for d in multiscale["datasets"]]
        self.letters = _named_axes(names, arrays[0].shape, loc.path, strict=True)
        image_zyx = tuple(n for a, n in zip(self.letters, arrays[0].shape) if a in "ZYX")
        if self.shape != image_zyx:
            raise InputError(f"{loc.path}: labels of shape {self.shape} do not fit the image {self.image} of shape {image_zyx}")
        # Each level: (shape, chunks, coordinate transformations, ratio to the level above). A level's voxel i is voxel
        # i * factor of level 0 (nearest, from its first voxel), so its scale is level 0's times the factor and its
        # translation level 0's (an image's own pyramid may be shifted by half a voxel where it was averaged).
        scale0 = _ngff_scale({"datasets": multiscale["datasets"][:1]}, 0) or [1.0] * len(names)
        shift0 = next((t.get("translation") for t in multiscale["datasets"][0].get("coordinateTransformations") or []
                       if t.get("type") == "translation"), None)
        self.levels = []
        above, factor = None, [1] * len(names)
        for array in arrays:
            zyx = tuple(n for a, n in zip(self.letters, array.shape) if a in "ZYX")
            ratio = (1, 1, 1)
            if above is not None:
                exact = [a / n for a, n in zip(above, zyx)]
                if not all(r >= 1 and abs(r - round(r)) <= 0.05 * r for r in exact):
                    break  # a level that is not every n-th voxel of the one above: the labels' pyramid stops there
                ratio = tuple(int(round(r)) for r in exact)
                spatial = iter(ratio)
                factor = [f * next(spatial) if a in "ZYX" else f for a, f in zip(self.letters, factor)]
            shape = tuple(1 if a in "TC" else n for a, n in zip(self.letters, array.shape))
            chunks = tuple(1 if a in "TC" else min(int(c), 256) for a, c in zip(self.letters, array.chunks))
            transforms = [{"type": "scale", "scale": [s * f for s, f in zip(scale0, factor)]}]
            if shift0 is not None:
                transforms.append({"type": "translation", "translation": list(shift0)})
            self.levels.append((shape, chunks, transforms, ratio))
            above = zyx
        self.chunks = tuple(c for a, c in zip(self.letters, self.levels[0][1]) if a in "ZYX")
        self.labels = self.image / "labels"
        self.made_labels = not self.labels.exists()
        try:
            if self.made_labels:
                zarr.open_group(str(self.labels), mode="w-", zarr_format=self.zarr_format)
            self.tmp = _temp_dir(self.labels / self.name, loc.path)
        except BaseException:
            if self.made_labels:
                _remove(self.labels)
            raise
        try:
            group = zarr.open_group(str(self.tmp), mode="w", zarr_format=self.zarr_format)
            shape, chunks = self.levels[0][:2]
            _zarr_array(zarr, (group, "0"), shape, chunks, self.dtype, self.zarr_format, list(names))
        except BaseException:
            self._cleanup()
            raise

    def _index(self, zyx) -> tuple:
        return tuple(0 if a in "TC" else zyx["ZYX".index(a)] for a in self.letters)

    def _write(self, zyx, block):
        if self._handle is None:
            import zarr

            self._handle = zarr.open_array(str(self.tmp / "0"), mode="r+")
        if block.ndim == 4:
            block = block[0]
        self._handle[self._index(zyx)] = block

    def _finish(self):
        import zarr

        writer = _ome_writer()
        add_metadata, get_metadata, write_multiscales_metadata = writer.add_metadata, writer.get_metadata, writer.write_multiscales_metadata
        self._handle = None
        fmt = _ngff_format(self.version)
        group = zarr.open_group(str(self.tmp), mode="r+")
        names = [a.get("name") if isinstance(a, dict) else a for a in self.axes_meta]
        datasets = []
        for level, (shape, chunks, transforms, ratio) in enumerate(self.levels):
            if level:
                target = _zarr_array(zarr, (group, str(level)), shape, chunks, self.dtype, self.zarr_format, names)
                _downsample(_SpatialView(group[str(level - 1)], self.letters), _SpatialView(target, self.letters), ratio)
            datasets.append({"path": str(level), "coordinateTransformations": transforms})
        write_multiscales_metadata(group, datasets, fmt=fmt, axes=self.axes_meta, name=self.name)
        if self.overall:
            multiscales = get_metadata(group)["multiscales"]
            multiscales[0]["coordinateTransformations"] = self.overall
            add_metadata(group, {"multiscales": multiscales}, fmt=fmt)
        add_metadata(group, {"image-label": {"version": fmt.version, "source": {"image": "../../"}}}, fmt=fmt)
        _into_place(self.tmp, self.labels / self.name)
        labels = zarr.open_group(str(self.labels), mode="r+")
        listed = list(get_metadata(labels).get("labels", []))
        if self.name not in listed:
            add_metadata(labels, {"labels": listed + [self.name]}, fmt=fmt)

    def _cleanup(self):
        self._handle = None
        tmp = getattr(self, "tmp", None)
        if tmp is not None:
            _remove(tmp)
        if self.made_labels and self.labels.is_dir():
            left = [p for p in self.labels.iterdir() if p.name not in (".zgroup", ".zattrs", "zarr.json")]
            if not left:
                _remove(self.labels)


class _SpatialView:
    """A Zarr array whose axes are ``letters`` (t, c, z, y, x), seen as (lead..., Z, Y, X) with t and c at point 0."""

    def __init__(self, array, letters):
        self.array, self.letters = array, letters
        self.shape = tuple(n for a, n in zip(letters, array.shape) if a in "ZYX")
        self.chunks = tuple(c for a, c in zip(letters, array.chunks) if a in "ZYX")
        self.dtype = array.dtype

    def _index(self, zyx):
        return tuple(0 if a in "TC" else zyx["ZYX".index(a)] for a in self.letters)

    def __getitem__(self, zyx):
        return self.array[self._index(zyx)]

    def __setitem__(self, zyx, value):
        self.array[self._index(zyx)] = value


class Hdf5Sink(FileSink):
    """An HDF5 dataset, ``file.h5:/path``: chunked and gzip-compressed, with ``element_size_um`` where the voxel size is known.

    A new file is written as a temporary file beside it and renamed on `finish`. Into an
    existing file the dataset is written under a temporary name in the file's root group,
    ``/.NAME.partial-XXXX``, and moved to its path on `finish` (replacing an earlier dataset
    there only with overwrite); `abort` deletes it. HDF5 does not give the space of a deleted
    dataset back (h5repack does), and a process killed mid-write leaves that temporary
    dataset in the file. One process writes an HDF5 output: the sink does not pickle.
    """

    def __init__(self, loc: Location, shape, dtype, reference: _Reference, chunks=None):
        super().__init__(loc.path, shape, dtype)
        h5py = _need("h5py", loc.path, "writing HDF5")
        self.file, self.name = loc.file, "/" + loc.inner
        chunks = tuple(chunks) if chunks is not None else _default_chunks(self.shape)
        chunks = (1,) * (len(self.shape) - len(chunks)) + chunks
        self.chunks = tuple(chunks[-3:])
        self.tmp_file = None if loc.file.exists() else _temp_file(loc.file, loc.file.suffix)
        self.tmp_name = self.name if self.tmp_file else f"/.{posixpath.basename(self.name)}.partial-{secrets.token_hex(4)}"
        self.h5 = None
        try:
            self.h5 = h5py.File(self.tmp_file or self.file, "w" if self.tmp_file else "r+")
            dataset = self.h5.create_dataset(self.tmp_name, shape=self.shape, dtype=self.dtype, chunks=chunks,
                                             compression="gzip", compression_opts=4, fillvalue=0)
            if reference.spacing is not None:
                unit = reference.unit or DEFAULT_UNIT
                dataset.attrs["element_size_um"] = [s * _MICROMETRES.get(unit, 1.0) for s in reference.spacing]
            dataset.attrs["axes"] = "czyx"[-len(self.shape):]
        except OSError as exc:
            self._cleanup()
            raise InputError(f"{self.path}: cannot write ({exc})") from exc
        except BaseException:
            self._cleanup()
            raise

    def __getstate__(self):
        raise TypeError(f"{self.path}: an HDF5 output is written by one process; write a Zarr output from several")

    def _write(self, zyx, block):
        self.h5[self.tmp_name][self._lead + zyx] = block

    def _finish(self):
        if self.tmp_file is None:
            parent = posixpath.dirname(self.name)
            if parent != "/":
                self.h5.require_group(parent)
            if self.name in self.h5:
                del self.h5[self.name]
            self.h5.move(self.tmp_name, self.name)
            self.h5.close()
        else:
            self.h5.close()
            _file_mode(self.tmp_file)
            os.replace(self.tmp_file, self.file)

    def _cleanup(self):
        h5, self.h5 = self.h5, None
        if h5 is not None and h5.id.valid:
            if self.tmp_file is None and self.tmp_name in h5:
                with contextlib.suppress(Exception):
                    del h5[self.tmp_name]
            h5.close()
        if self.tmp_file is not None:
            self.tmp_file.unlink(missing_ok=True)


def create_sink(path: str | os.PathLike, shape: Sequence[int], dtype, *, spacing=None, reference=None,
                overwrite: bool = False, chunks: Sequence[int] | None = None) -> FileSink:
    """An output of ``shape`` (Z, Y, X) or (C, Z, Y, X) to write block by block (a `sparseseg.blocks.Sink`).

    The format is ``path``'s (as `check_output` reads it, and checked as it does).
    ``spacing`` (z, y, x), else ``reference.spacing``, is the voxel size written; ``reference``
    (a `Volume` or a source) gives its unit and, for NIfTI, the header and affine. ``chunks``
    (z, y, x) sets the chunks of a chunked output (Zarr, OME-Zarr, HDF5). See `TiffSink`,
    `NiftiSink`, `ZarrSink`, `OmeZarrSink`, `OmeLabelsSink`, `Hdf5Sink`.
    """
    path = check_output(path, overwrite)
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"an output is (Z, Y, X) or (C, Z, Y, X), got shape {shape}")
    dtype = np.dtype(dtype)
    ref = _reference(reference, spacing)
    loc = locate(path)
    if loc.suffix in TIFF_SUFFIXES:
        return TiffSink(path, shape, dtype, ref)
    if loc.suffix in NIFTI_SUFFIXES:
        return NiftiSink(path, shape, dtype, ref)
    if loc.zarr:
        if loc.labels_image() is not None:
            return OmeLabelsSink(loc, shape, dtype)
        if loc.suffix == ".ome.zarr" and not loc.parts:
            return OmeZarrSink(loc, shape, dtype, ref, chunks)
        return ZarrSink(loc, shape, dtype, ref, chunks)
    return Hdf5Sink(loc, shape, dtype, ref, chunks)


# --- writing whole volumes and small files -----------------------------------------------------------


def write_volume(path: str | os.PathLike, data: np.ndarray, reference: Volume | None = None, overwrite: bool = False) -> Path:
    """Write a (Z, Y, X) or (C, Z, Y, X) array atomically, in the format of ``path``.

    A TIFF gets the voxel size (and unit) of ``reference``, as an ImageJ hyperstack; a NIfTI
    gets its affine and header; Zarr, OME-Zarr and HDF5 outputs are written through their
    sink (`create_sink`).
    """
    path = check_output(path, overwrite)
    suffix = locate(path).suffix
    ref = _reference(reference)
    if suffix in TIFF_SUFFIXES:
        _atomic(path, lambda tmp: _write_tiff(tmp, data, ref.spacing, ref.unit))
    elif suffix in NIFTI_SUFFIXES:
        _atomic(path, lambda tmp: _write_nifti(tmp, data, reference))
    else:
        with create_sink(path, data.shape, data.dtype, reference=reference, overwrite=overwrite) as sink:
            sink.write(tuple(slice(0, n) for n in data.shape[-3:]), data)
            return sink.finish()
    return path


def write_png(path: str | os.PathLike, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG file, atomically."""
    from PIL import Image

    path = check_output(path, overwrite, suffixes=(".png",))
    _atomic(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
    return path


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False, suffixes: Sequence[str] = (".json", ".csv")) -> Path:
    """Write a text file (a JSON or CSV report), atomically."""
    path = check_output(path, overwrite, suffixes=suffixes)
    _atomic(path, lambda tmp: tmp.write_text(text))
    return path


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n", overwrite, suffixes=(".json",))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read JSON ({exc})") from exc
