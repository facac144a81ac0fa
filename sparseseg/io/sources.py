"""Reading volumes of any format: opened as a block source, or read whole as a `Volume`.

Several files of one shape are opened, or read, as the channels of one image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.base import FileSource, Reference, _with
from sparseseg.io.hdf5 import Hdf5Source
from sparseseg.io.locations import NIFTI_SUFFIXES, TIFF_SUFFIXES, Location, known_suffix, locate
from sparseseg.io.nifti import NiftiSource, _nifti_spacing, _read_nifti
from sparseseg.io.tiff import TiffSource, _read_tiff
from sparseseg.io.zarr_store import _open_zarr


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

    @property
    def reference(self) -> Reference:
        """What an output written in kind takes from this volume (voxel size, unit, NIfTI header): not its data."""
        return Reference(self.spacing, self.unit, self.nifti)


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


class ChannelStack:
    """Several sources of one (Z, Y, X) shape as the channels of one `sparseseg.io.blocks.Source`, in order.

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

    @property
    def locations(self) -> tuple[Location, ...]:
        """Where each channel's volume lies, in order."""
        return tuple(loc for s in self.sources for loc in s.locations)

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
    known_suffix(loc)
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


def _read_quietly(path, read):
    """``read()``, with what the libraries say collected: returns its result and their messages.

    A failure (a corrupt or foreign file) raises a one-line `InputError` that says which file,
    and why, with the libraries' messages folded in.
    """
    with _library_messages() as messages:
        try:
            result = read()
            failure = None
        except InputError:
            raise
        except Exception as exc:  # a corrupt or foreign file: say which, and why
            failure = exc
    if failure is not None:
        raise InputError(f"{path}: cannot read ({_with([str(failure)] + messages)})") from failure
    return result, messages


def _opened(loc: Location) -> FileSource:
    """Open one source; what the libraries say on the way is said at its first read (`FileSource.said`)."""
    source, messages = _read_quietly(loc.path, lambda: _open_one(loc))
    source.said = messages
    return source


def _check_dtype(path, dtype) -> None:
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{path}: unsupported data type {dtype}")


def open_source(paths: str | os.PathLike | Sequence[str | os.PathLike]):
    """Open one or more volumes of the same (Z, Y, X) shape as one (C, Z, Y, X) `sparseseg.io.blocks.Source`.

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

    def read():
        if loc.suffix in TIFF_SUFFIXES:
            data, spacing, unit = _read_tiff(path)
            return data, spacing, unit, None
        data, spacing, nifti = _read_nifti(path)
        return data, spacing, _nifti_spacing(nifti)[1], nifti

    (data, spacing, unit, nifti), messages = _read_quietly(path, read)
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
    """Read a label volume (Z, Y, X). Values are checked later, by `sparseseg.method.annotation`."""
    volume = read_volume(path)
    if volume.data.ndim != 3:
        raise InputError(f"{volume.path}: a label volume must be 3D (Z, Y, X), got shape {volume.data.shape}")
    return volume
