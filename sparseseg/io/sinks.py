"""Writing volumes of any format: an output created as a block sink, or a whole array written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io import nifti, tiff
from sparseseg.io.atomic import _atomic
from sparseseg.io.base import FileSink, Reference, _reference
from sparseseg.io.checks import check_output
from sparseseg.io.hdf5 import Hdf5Sink
from sparseseg.io.locations import NIFTI_SUFFIXES, TIFF_SUFFIXES, locate
from sparseseg.io.nifti import NiftiSink
from sparseseg.io.ome_zarr import OmeLabelsSink, OmeZarrSink
from sparseseg.io.partial import Resumable
from sparseseg.io.sources import Volume
from sparseseg.io.tiff import TiffSink
from sparseseg.io.zarr_store import ZarrSink


def create_sink(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype,
    *,
    spacing=None,
    reference=None,
    overwrite: bool = False,
    chunks: Sequence[int] | None = None,
    resumable: Resumable | None = None,
) -> FileSink:
    """An output of ``shape`` (Z, Y, X) or (C, Z, Y, X) to write block by block (a `sparseseg.io.blocks.Sink`).

    The format is ``path``'s (as `check_output` reads it, and checked as it does).
    ``spacing`` (z, y, x), else ``reference.spacing``, is the voxel size written; ``reference``
    (a `Volume` or a source) gives its unit and, for NIfTI, the header and affine. ``chunks``
    (z, y, x) sets the chunks of a chunked output (Zarr, OME-Zarr, HDF5). See `TiffSink`,
    `NiftiSink`, `ZarrSink`, `OmeZarrSink`, `OmeLabelsSink`, `Hdf5Sink`.

    ``resumable`` (`sparseseg.io.partial.Resumable`) makes a Zarr-family output one that an interrupted run can keep
    and a later one take up; with its ``resume`` the one left for the same key is taken up (an `InputError` where
    there is none, or for another format). Other formats ignore it.
    """
    key, resume = (resumable.key, resumable.resume) if resumable is not None else (None, False)
    if resume:
        check_resumable(path)
    path = check_output(path, overwrite)
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"an output is (Z, Y, X) or (C, Z, Y, X), got shape {shape}")
    dtype = np.dtype(dtype)
    ref = _reference(reference, spacing)
    loc = locate(path)
    sink = _sink(loc, path, shape, dtype, ref, chunks, key, resume)
    sink.overwrite = overwrite
    return sink


def _sink(loc, path, shape, dtype, ref, chunks, key, resume) -> FileSink:
    """The sink of ``path``'s format (see `create_sink`)."""
    if loc.suffix in TIFF_SUFFIXES:
        return TiffSink(path, shape, dtype, ref)
    if loc.suffix in NIFTI_SUFFIXES:
        return NiftiSink(path, shape, dtype, ref)
    if loc.zarr:
        if loc.labels_image() is not None:
            return OmeLabelsSink(loc, shape, dtype, key=key, resume=resume)
        if loc.suffix == ".ome.zarr" and not loc.parts:
            return OmeZarrSink(loc, shape, dtype, ref, chunks, key=key, resume=resume)
        return ZarrSink(loc, shape, dtype, ref, chunks, key=key, resume=resume)
    return Hdf5Sink(loc, shape, dtype, ref, chunks)


def check_resumable(path: str | os.PathLike) -> None:
    """Refuse ``resume`` for an output that cannot be taken up again: anything but Zarr or OME-Zarr."""
    if not locate(path).zarr:
        raise InputError(
            "only a Zarr or OME-Zarr output (.zarr, .ome.zarr) can be resumed", param="resume", value=str(path)
        )


def write_volume(
    path: str | os.PathLike, data: np.ndarray, reference: Volume | Reference | None = None, overwrite: bool = False
) -> Path:
    """Write a (Z, Y, X) or (C, Z, Y, X) array atomically, in the format of ``path``.

    A TIFF gets the voxel size (and unit) of ``reference``, as an ImageJ hyperstack; a NIfTI
    gets its affine and header; Zarr, OME-Zarr and HDF5 outputs are written through their
    sink (`create_sink`).
    """
    path = check_output(path, overwrite)
    suffix = locate(path).suffix
    ref = _reference(reference)
    # The writers are looked up on their modules when called, so that a fault patched into tiff._write_tiff or
    # nifti._write_nifti (tests/io/test_faults.py) reaches these writes as it reaches the sinks'.
    if suffix in TIFF_SUFFIXES:
        _atomic(path, lambda tmp: tiff._write_tiff(tmp, data, ref.spacing, ref.unit), overwrite)
    elif suffix in NIFTI_SUFFIXES:
        _atomic(path, lambda tmp: nifti._write_nifti(tmp, data, reference), overwrite)
    else:
        with create_sink(path, data.shape, data.dtype, reference=reference, overwrite=overwrite) as sink:
            sink.write(tuple(slice(0, n) for n in data.shape[-3:]), data)
            return sink.finish()
    return path
