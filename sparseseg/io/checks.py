"""Checking an output before any work: a known format, a folder that exists, nothing there already.

An output that exists may be replaced only with overwrite; the library it needs must be installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.locations import SUFFIXES, Location, _have, _need, locate
from sparseseg.io.ngff import _ngff, _zarr_kind, _zarr_meta


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
    if path.is_symlink() and not path.exists() and not overwrite:
        raise InputError(
            f"{path}: is a symbolic link to nothing (to {os.readlink(path)}); use --overwrite to replace "
            "the link, or give another name"
        )
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists already (use --overwrite to replace it)")
    return path


def _check_replaceable(loc: Location, target: Path, overwrite: bool) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise InputError(f"{loc.path}: exists already (use --overwrite to replace it)")
    if not target.is_dir() or _zarr_kind(target) is None:
        raise InputError(
            f"{loc.path}: is not a Zarr array or group, so --overwrite does not replace it; give another name"
        )


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
            raise InputError(
                f"{loc.path}: {folder} is not an OME-Zarr image (no multiscales metadata); labels/NAME goes into one"
            )
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
