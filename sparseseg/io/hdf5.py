"""HDF5 datasets (``file.h5:/path``): opened as a block source, and written block by block.

A dataset is written into a new file, or into an existing one beside its other datasets.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import shutil

from sparseseg.errors import InputError
from sparseseg.io.atomic import _file_mode, _into_place, _place, _room, _temp_file, _undone_on_failure
from sparseseg.io.base import FileSink, FileSource, Reference, _default_chunks
from sparseseg.io.locations import Location, _need
from sparseseg.io.metadata import _MICROMETRES, DEFAULT_UNIT, _attrs_spacing, _file_axes, _named_axes


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
            names = (
                labels
                if all(labels)
                else (list(given) if isinstance(given, str) and len(given) == len(shape) else None)
            )
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


class Hdf5Sink(FileSink):
    """An HDF5 dataset, ``file.h5:/path``: chunked and gzip-compressed, with ``element_size_um`` where the voxel size is
    known.

    The dataset is written into a temporary file beside the target and renamed onto it on `finish`: a new file, or a
    copy of an existing file that the dataset is added to (replacing an earlier dataset there only with overwrite).
    An existing file is never opened for writing, so a full disk or a killed run leaves it as it was; `abort`
    removes the temporary file. One process writes an HDF5 output: the sink does not pickle.
    """

    def __init__(self, loc: Location, shape, dtype, reference: Reference, chunks=None):
        super().__init__(loc.path, shape, dtype)
        h5py = _need("h5py", loc.path, "writing HDF5")
        self.file, self.name = loc.file, "/" + loc.inner
        chunks = tuple(chunks) if chunks is not None else _default_chunks(self.shape)
        chunks = (1,) * (len(self.shape) - len(chunks)) + chunks
        self.chunks = tuple(chunks[-3:])
        self.existing = loc.file.exists()
        self.tmp_file = _temp_file(loc.file, loc.file.suffix)
        self.tmp_name = (
            self.name if not self.existing else f"/.{posixpath.basename(self.name)}.partial-{secrets.token_hex(4)}"
        )
        self.h5 = None
        try:
            with _undone_on_failure(self._cleanup):
                if self.existing:
                    _room(self.tmp_file, loc.file.stat().st_size)
                    shutil.copyfile(loc.file, self.tmp_file)
                self.h5 = h5py.File(self.tmp_file, "r+" if self.existing else "w")
                dataset = self.h5.create_dataset(
                    self.tmp_name,
                    shape=self.shape,
                    dtype=self.dtype,
                    chunks=chunks,
                    compression="gzip",
                    compression_opts=4,
                    fillvalue=0,
                )
                if reference.spacing is not None:
                    unit = reference.unit or DEFAULT_UNIT
                    dataset.attrs["element_size_um"] = [s * _MICROMETRES.get(unit, 1.0) for s in reference.spacing]
                dataset.attrs["axes"] = "czyx"[-len(self.shape) :]
        except OSError as exc:
            raise InputError(f"'{self.path}': cannot write ({exc}); nothing was written there") from exc

    def __getstate__(self):
        raise TypeError(f"{self.path}: an HDF5 output is written by one process; write a Zarr output from several")

    def _write(self, zyx, block):
        self.h5[self.tmp_name][self._lead + zyx] = block

    def _finish(self):
        if self.existing:
            parent = posixpath.dirname(self.name)
            if parent != "/":
                self.h5.require_group(parent)
            if self.name in self.h5:
                del self.h5[self.name]
            self.h5.move(self.tmp_name, self.name)
        self.h5.close()
        _file_mode(self.tmp_file)
        if self.existing:
            _into_place(self.tmp_file, self.file)  # the file grows by a dataset: it was there, and is meant to change
        else:
            _place(self.tmp_file, self.file, self.overwrite)

    def _cleanup(self):
        h5, self.h5 = self.h5, None
        if h5 is not None and h5.id.valid:
            with contextlib.suppress(Exception):
                h5.close()
        self.tmp_file.unlink(missing_ok=True)
