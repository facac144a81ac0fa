"""What a command reads and what it writes, checked before any work: an input is never an output.

Paths are compared after resolving symbolic links, and with `os.path.samefile` where both
exist (hard links). An output may not be an input, another output, or lie inside an output
folder; an input may not lie inside an output folder either. Inside a Zarr store or an
HDF5 file, the store or file and the path inside it are compared (see `check_distinct`).
`--overwrite` replaces an earlier output, never an input: these clashes are refused whatever
it says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sparseseg import io
from sparseseg.errors import InputError

PathLike = str | os.PathLike


def same(a: PathLike, b: PathLike) -> bool:
    """True where ``a`` and ``b`` name one file or folder (symbolic and hard links included)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def inside(path: PathLike, folder: PathLike) -> bool:
    """True where ``path`` lies somewhere inside ``folder`` (not ``folder`` itself)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return folder in path.parents


def _changes(out: io.Location, source: io.Location) -> str | None:
    """How writing ``out`` would change the input ``source`` ('same', 'inside'), or None where it would not."""
    if same(out.file, source.file):
        if out.parts == source.parts:
            return "same"
        image = out.labels_image()
        if image is not None and source.parts[: len(image)] == image and source.parts[: len(out.parts)] != out.parts:
            return None  # labels written into an input OME-Zarr image (or beside its other labels): allowed
        return "inside"
    if source.zarr and inside(out.file, source.file):
        return "inside"  # a file written into an input Zarr store's folder
    return None


def _overlap(a: io.Location, b: io.Location) -> bool:
    """True where two outputs are one, or lie in one file or store (two labels of one image excepted)."""
    if same(a.file, b.file):
        if a.parts == b.parts:
            return True
        both = a.labels_image()
        return not (both is not None and both == b.labels_image())
    return (a.zarr and inside(b.file, a.file)) or (b.zarr and inside(a.file, b.file))


def check_distinct(
    inputs: Iterable[PathLike | io.Location | None],
    outputs: Iterable[PathLike | None],
    folders: Iterable[PathLike | None] = (),
) -> None:
    """Raise `InputError` if an output clashes with an input or with another output.

    Parameters
    ----------
    inputs : paths read by the command, or the locations of the inputs opened
        (`sparseseg.io.base.FileSource.locations`); None entries are ignored.
    outputs : files the command writes.
    folders : folders the command writes (a model folder, a report folder).

    Volumes inside a Zarr store or an HDF5 file (``vol.zarr/raw``, ``file.h5:/raw``) are
    compared by their store or file and the path inside it: an output may not be an input,
    lie in an input's store or file, or hold an input. The one exception is labels written
    into an input OME-Zarr image, ``IMAGE.ome.zarr/labels/NAME``: they go beside the image's
    arrays, which are never opened for writing.
    """
    inputs = [p if isinstance(p, io.Location) else io.locate(p) for p in inputs if p is not None]
    folders = [Path(p) for p in folders if p is not None]
    written = [Path(p) for p in outputs if p is not None] + folders
    for out in written:
        where = io.locate(out)
        for source in inputs:
            clash = _changes(where, source)
            if clash == "same" or (out in folders and inside(source.file, out)):
                raise InputError(
                    f"{out}: is also an input ({source.path}); an input is never overwritten, give another output path"
                )
            if clash == "inside":
                raise InputError(
                    f"{out}: would write inside the input {source.path}; an input is never changed, give another "
                    "output path"
                )
    for i, out in enumerate(written):
        for other in written[i + 1 :]:
            if _overlap(io.locate(out), io.locate(other)):
                raise InputError(f"{out}: given for two outputs ({other}); output paths must differ")
        for folder in folders:
            if out != folder and inside(io.locate(out).file, folder):
                raise InputError(f"{out}: lies inside the output folder {folder}; write it elsewhere")
