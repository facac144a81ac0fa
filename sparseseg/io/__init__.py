"""Reading and writing volumes: TIFF, NIfTI, Zarr, OME-Zarr and HDF5. The only package that touches files.

Inside sparseseg every volume is a numpy array with axes (Z, Y, X), or (C, Z, Y, X) for
several channels, and a voxel size ``spacing`` as (z, y, x). A volume is read whole
(`read_volume`, `read_image`) or block by block (`open_source`, a `sparseseg.io.blocks.Source`),
and written whole (`write_volume`) or block by block (`create_sink`, a `sparseseg.io.blocks.Sink`).

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
Every library is imported where it is used, so that importing this package needs none of them.
Every output stays invisible under its name until it is complete: it is written under a
temporary name beside it and renamed at the end, so that a failed or interrupted write leaves
an earlier output as it was.

This module is the package's public API; the work is done in its modules, one job each:
`locations` (how a volume is named), `metadata` (axes, voxel sizes, units), `ngff` (Zarr and
NGFF metadata), `base` (the block source and sink base classes), `atomic` (temporary files
renamed into place), one module a format (`tiff`, `nifti`, `zarr_store`, `ome_zarr`, `hdf5`),
`sources` (reading), `checks` (outputs checked before any work), `sinks` (writing volumes) and
`small` (PNG, JSON and CSV files, and any file written whole).
"""

from sparseseg.io import atomic, nifti, tiff
from sparseseg.io.atomic import outputs_together
from sparseseg.io.base import FileSink, FileSource, Reference
from sparseseg.io.checks import check_output
from sparseseg.io.hdf5 import Hdf5Sink, Hdf5Source
from sparseseg.io.locations import (
    FORMATS_EXTRA,
    HDF5_SUFFIXES,
    NIFTI_SUFFIXES,
    SUFFIXES,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    Location,
    locate,
    stamp,
    suffix_of,
)
from sparseseg.io.metadata import DEFAULT_UNIT
from sparseseg.io.nifti import NiftiSink, NiftiSource
from sparseseg.io.ome_zarr import NGFF_VERSION, PYRAMID_BLOCK_BYTES, OmeLabelsSink, OmeZarrSink
from sparseseg.io.partial import Resumable
from sparseseg.io.sinks import check_resumable, create_sink, write_volume
from sparseseg.io.small import read_json, write_file, write_json, write_png, write_text
from sparseseg.io.sources import ChannelStack, Volume, open_source, read_image, read_labels, read_volume
from sparseseg.io.tiff import BIGTIFF_BYTES, IMAGEJ_DTYPES, TiffSink, TiffSource
from sparseseg.io.zarr_store import OmeZarrSource, ZarrSink, ZarrSource

__all__ = [
    # naming and checking
    "TIFF_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ZARR_SUFFIXES",
    "HDF5_SUFFIXES",
    "SUFFIXES",
    "FORMATS_EXTRA",
    "Location",
    "locate",
    "suffix_of",
    "check_output",
    "check_resumable",
    "stamp",
    # reading
    "Volume",
    "Reference",
    "read_volume",
    "read_image",
    "read_labels",
    "open_source",
    "FileSource",
    "ChannelStack",
    "TiffSource",
    "NiftiSource",
    "ZarrSource",
    "OmeZarrSource",
    "Hdf5Source",
    # writing
    "write_volume",
    "create_sink",
    "Resumable",
    "FileSink",
    "TiffSink",
    "NiftiSink",
    "ZarrSink",
    "OmeZarrSink",
    "OmeLabelsSink",
    "Hdf5Sink",
    "NGFF_VERSION",
    "BIGTIFF_BYTES",
    "IMAGEJ_DTYPES",
    "PYRAMID_BLOCK_BYTES",
    "DEFAULT_UNIT",
    # small files
    "write_png",
    "write_text",
    "write_json",
    "write_file",
    "read_json",
    "outputs_together",
]

# Internals the tests reach as sparseseg.io.NAME. Their callers look them up in the module that defines them, so a
# patch goes there (sparseseg.io.tiff._write_tiff, sparseseg.io.tiff.BIGTIFF_BYTES), not on these copies.
_atomic = atomic._atomic
_write_tiff = tiff._write_tiff
_write_nifti = nifti._write_nifti
