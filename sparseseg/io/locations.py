"""How a volume is named: which format a name stands for, and where on disk and inside a store it lies.

``vol.tif``, ``vol.nii.gz``: a file; ``vol.zarr/path/in/group``: an array or group inside a Zarr
store; ``file.h5:/path``: a dataset inside an HDF5 file (see `Location`). Also the optional
library each format needs, and how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sparseseg.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES + ZARR_SUFFIXES + HDF5_SUFFIXES

#: What to install for Zarr, OME-Zarr and HDF5.
FORMATS_EXTRA = 'pip install "sparseseg[formats]"'


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
            return Location(Path(text), Path(*parts[: i + 1]), "/".join(parts[i + 1 :]), suffix)
    name = Path(text).name.lower()
    suffix = next((s for s in TIFF_SUFFIXES + NIFTI_SUFFIXES if name.endswith(s)), "")
    return Location(Path(text), Path(text), "", suffix)


def suffix_of(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` ('.tif', '.tiff', '.nii', '.nii.gz', '.zarr', '.ome.zarr', '.h5', '.hdf5'), lower
    case."""
    return known_suffix(locate(path))


def known_suffix(loc: Location) -> str:
    """The format suffix of a location, as `suffix_of`; an `InputError` where sparseseg reads no such format."""
    if not loc.suffix:
        raise InputError(f"{loc.path}: unsupported file type (use one of {', '.join(SUFFIXES)})")
    return loc.suffix


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


def stamp(path: str | os.PathLike | Location) -> list:
    """What says that an input is the one an earlier run read: its absolute path, and the size and modification
    time of its file (of a Zarr array or group: of its metadata files; chunks are not looked at, nor the folder,
    which labels written into an OME-Zarr image change). ``path`` may be located already."""
    loc = path if isinstance(path, Location) else locate(path)
    path = loc.path
    place = loc.file.joinpath(*loc.parts) if loc.zarr else loc.file
    files = (
        [place / m for m in ("zarr.json", ".zarray", ".zattrs", ".zgroup") if (place / m).is_file()]
        if loc.zarr
        else [place]
    )
    stats = [os.stat(f) for f in files]
    return [os.path.abspath(path)] + [[s.st_size, s.st_mtime_ns] for s in stats]
