"""Zarr stores: an array or an OME-Zarr image opened as a block source, and a plain Zarr array written.

Named ``zarr_store`` so that it does not shadow the zarr library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparseseg.errors import InputError
from sparseseg.io.atomic import _place, _remove, _undone_on_failure
from sparseseg.io.base import FileSource, Reference, _default_chunks
from sparseseg.io.locations import Location, _need
from sparseseg.io.metadata import DEFAULT_UNIT, _attrs_spacing, _file_axes, _named_axes, _unit
from sparseseg.io.ngff import _ngff, _ngff_axis_names, _ngff_scale, _ngff_version, _zarr_format, _zarr_meta
from sparseseg.io.partial import PartialSink


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


def _zarr_array(zarr, store, shape, chunks, dtype, zarr_format: int, names: list[str], attributes: dict | None = None):
    """A new Zarr array, compressed (zarr's default codec) with '/'-separated chunk keys (as NGFF asks) in both
    formats."""
    kwargs: dict[str, Any] = {
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "fill_value": 0,
        "zarr_format": zarr_format,
        "attributes": dict(attributes or {}),
    }
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


def _sink_key(key: dict | None, sink) -> dict | None:
    """The fingerprint of a run (``key``) with what the sink itself is: its shape, dtype and chunks."""
    if key is None:
        return None
    return dict(key, shape=list(sink.shape), dtype=sink.dtype.str, chunks=list(sink.chunks))


class ZarrSink(PartialSink):
    """A plain Zarr array: ``out.zarr`` (a new store, Zarr format 3) or ``store.zarr/name`` (in an existing group, its
    format).

    Chunked and compressed; blocks are written as they come into a temporary folder beside the
    target, renamed onto it on `finish`. Worker processes may write blocks of one sink (it
    pickles): give them disjoint blocks aligned to ``chunks``. With a ``key`` (the run's
    fingerprint) the folder can be kept on an interrupt and taken up with ``resume``
    (`sparseseg.io.partial`).
    """

    def __init__(self, loc: Location, shape, dtype, reference: Reference, chunks=None, key=None, resume=False):
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
        names = ["c", "z", "y", "x"][-len(self.shape) :]
        if self._partial(self.final, loc.path, _sink_key(key, self), resume):
            with _undone_on_failure(lambda: _remove(self.tmp), self.path):
                _zarr_array(zarr, self.tmp, self.shape, chunks, self.dtype, zarr_format, names, attributes)
                self._record()

    def _write(self, zyx, block):
        if self._handle is None:
            import zarr

            self._handle = zarr.open_array(str(self.tmp), mode="r+")
        self._handle[self._lead + zyx] = block

    def _finish(self):
        self._handle = None
        self._unrecord()
        _place(self.tmp, self.final, self.overwrite)

    def _cleanup(self):
        self._handle = None
        _remove(self.tmp)
