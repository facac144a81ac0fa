"""NIfTI volumes: read through nibabel, block by block or whole, and written with the header of their input.

NIfTI stores (X, Y, Z): arrays are transposed to (Z, Y, X) on reading and back on writing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.atomic import _atomic
from sparseseg.io.base import FileSink, FileSource, Reference
from sparseseg.io.metadata import _unit


class NiftiSource(FileSource):
    """A NIfTI file through nibabel's array proxy: slicing the proxy reads only that part (a .nii.gz is decompressed up
    to it)."""

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


class NiftiSink(FileSink):
    """A NIfTI output, held in memory and written on `finish` (medical volumes are small; NIfTI has no chunks to write
    blocks into)."""

    def __init__(self, path, shape, dtype, reference: Reference):
        super().__init__(path, shape, dtype)
        self.reference = reference
        self.data = np.zeros(self.shape, self.dtype)

    def __getstate__(self):
        raise TypeError(f"{self.path}: a NIfTI output is written by one process; write a Zarr output from several")

    def _write(self, zyx, block):
        self.data[self._lead + zyx] = block

    def _finish(self):
        _atomic(self.path, lambda tmp: _write_nifti(tmp, self.data, self.reference), self.overwrite)
        self.data = None

    def _cleanup(self):
        self.data = None
