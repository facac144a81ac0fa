"""Writing OME-Zarr (NGFF): a new image with a scale pyramid, and labels into an existing image at each of its
levels."""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.atomic import _place, _remove, _undone_on_failure
from sparseseg.io.base import Reference, _default_chunks
from sparseseg.io.blocks import block_shape, plan_blocks
from sparseseg.io.locations import Location, _need
from sparseseg.io.metadata import _NGFF_UNITS, DEFAULT_UNIT, _named_axes
from sparseseg.io.ngff import _ngff, _ngff_axis_names, _ngff_scale, _ngff_version, _zarr_format
from sparseseg.io.partial import PartialSink
from sparseseg.io.zarr_store import _sink_key, _zarr_array

#: The NGFF version of a new OME-Zarr image (labels take the version of their image).
NGFF_VERSION = "0.4"
#: Memory for one block while a scale pyramid is built.
PYRAMID_BLOCK_BYTES = 64 * 2**20


def _ome_writer():
    """ome-zarr's writer module (it warns about its own deprecated Scaler while it is imported: not the user's
    business)."""
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


class OmeZarrSink(PartialSink):
    """A new OME-Zarr image (``out.ome.zarr``): NGFF `NGFF_VERSION` (0.4, Zarr format 2, what most viewers read), axes
    (c,) z, y, x with the voxel size and unit in the coordinate transformations.

    Level 0 is written block by block into a temporary folder beside the target; `finish`
    builds the scale pyramid from it (every other voxel, never interpolated, block by block:
    see `_pyramid`), writes the metadata with ome-zarr's writer and renames the folder into
    place. Pickles for worker processes, and is kept and resumed, as `ZarrSink`.
    """

    def __init__(
        self,
        loc: Location,
        shape,
        dtype,
        reference: Reference,
        chunks=None,
        version: str = NGFF_VERSION,
        key=None,
        resume=False,
    ):
        super().__init__(loc.path, shape, dtype)
        zarr = _need("zarr", loc.path, "writing OME-Zarr")
        _need("ome_zarr", loc.path, "writing OME-Zarr")
        self.final = loc.file.joinpath(*loc.parts)
        self.version, self.spacing, self.unit = version, reference.spacing, reference.unit
        self.zarr_format = 3 if version.startswith("0.5") else 2
        chunks = tuple(chunks) if chunks is not None else _default_chunks(self.shape)
        self.level_chunks = (1,) * (len(self.shape) - len(chunks)) + chunks
        self.chunks = tuple(self.level_chunks[-3:])
        self.names = ["c", "z", "y", "x"][-len(self.shape) :]
        if self._partial(self.final, loc.path, _sink_key(key, self), resume):
            with _undone_on_failure(lambda: _remove(self.tmp), self.path):
                group = zarr.open_group(str(self.tmp), mode="w", zarr_format=self.zarr_format)
                _zarr_array(zarr, (group, "0"), self.shape, self.level_chunks, self.dtype, self.zarr_format, self.names)
                self._record()

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
        self._unrecord()
        _place(self.tmp, self.final, self.overwrite)

    def _cleanup(self):
        self._handle = None
        _remove(self.tmp)


def _label_levels(letters: str, multiscale: dict, arrays: list) -> list[tuple]:
    """The levels of labels over an OME-Zarr image's levels ``arrays``: (shape, chunks, coordinate transformations,
    ratio to the level above) each.

    A level's voxel i is voxel i * factor of level 0 (nearest, from its first voxel), so its scale is level 0's times
    the factor and its translation level 0's (an image's own pyramid may be shifted by half a voxel where it was
    averaged). The labels' pyramid stops at a level that is not every n-th voxel of the one above.
    """
    names = _ngff_axis_names(multiscale)
    scale0 = _ngff_scale({"datasets": multiscale["datasets"][:1]}, 0) or [1.0] * len(names)
    shift0 = next(
        (
            t.get("translation")
            for t in multiscale["datasets"][0].get("coordinateTransformations") or []
            if t.get("type") == "translation"
        ),
        None,
    )
    levels = []
    above, factor = None, [1] * len(names)
    for array in arrays:
        zyx = tuple(n for a, n in zip(letters, array.shape) if a in "ZYX")
        ratio = (1, 1, 1)
        if above is not None:
            exact = [a / n for a, n in zip(above, zyx)]
            if not all(r >= 1 and abs(r - round(r)) <= 0.05 * r for r in exact):
                break
            ratio = tuple(int(round(r)) for r in exact)
            spatial = iter(ratio)
            factor = [f * next(spatial) if a in "ZYX" else f for a, f in zip(letters, factor)]
        shape = tuple(1 if a in "TC" else n for a, n in zip(letters, array.shape))
        chunks = tuple(1 if a in "TC" else min(int(c), 256) for a, c in zip(letters, array.chunks))
        transforms = [{"type": "scale", "scale": [s * f for s, f in zip(scale0, factor)]}]
        if shift0 is not None:
            transforms.append({"type": "translation", "translation": list(shift0)})
        levels.append((shape, chunks, transforms, ratio))
        above = zyx
    return levels


class OmeLabelsSink(PartialSink):
    """NGFF labels written into an existing OME-Zarr image: ``IMAGE.ome.zarr/labels/NAME``.

    The labels have the image's axes (a channel or time axis of one point), its levels and
    their coordinate transformations, its NGFF version and Zarr format, and its chunks where
    they are small; each lower level is every n-th voxel of the one above, so that the labels
    lie on the image at every level. ``image-label`` metadata is written, and NAME is added
    to the ``labels`` list of IMAGE/labels, so that napari and other viewers open the labels
    over the image. The image's own arrays and metadata are never opened for writing: only
    IMAGE/labels is written, created where it is missing (and removed again on `abort` if it
    was). Blocks go to a temporary group inside IMAGE/labels, renamed to NAME on `finish`;
    it is kept and resumed as `ZarrSink`.
    """

    def __init__(self, loc: Location, shape, dtype, key=None, resume=False):
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
            raise InputError(
                f"{loc.path}: labels of shape {self.shape} do not fit the image {self.image} of shape {image_zyx}"
            )
        self.levels = _label_levels(self.letters, multiscale, arrays)
        self.chunks = tuple(c for a, c in zip(self.letters, self.levels[0][1]) if a in "ZYX")
        self.labels = self.image / "labels"
        self.made_labels = not self.labels.exists()
        try:
            if self.made_labels:
                zarr.open_group(str(self.labels), mode="w-", zarr_format=self.zarr_format)
            fresh = self._partial(self.labels / self.name, loc.path, _sink_key(key, self), resume)
        except BaseException:
            if self.made_labels:
                _remove(self.labels)
            raise
        if not fresh:
            self.made_labels = bool(self.key.get("made_labels"))  # the run that began it made IMAGE/labels
            return
        if self.key is not None:
            self.key["made_labels"] = self.made_labels
        with _undone_on_failure(self._cleanup, self.path):
            group = zarr.open_group(str(self.tmp), mode="w", zarr_format=self.zarr_format)
            shape, chunks = self.levels[0][:2]
            _zarr_array(zarr, (group, "0"), shape, chunks, self.dtype, self.zarr_format, list(names))
            self._record()

    def _index(self, zyx) -> tuple:
        return _spatial_index(self.letters, zyx)

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
        add_metadata, get_metadata, write_multiscales_metadata = (
            writer.add_metadata,
            writer.get_metadata,
            writer.write_multiscales_metadata,
        )
        self._handle = None
        fmt = _ngff_format(self.version)
        group = zarr.open_group(str(self.tmp), mode="r+")
        names = [a.get("name") if isinstance(a, dict) else a for a in self.axes_meta]
        datasets = []
        for level, (shape, chunks, transforms, ratio) in enumerate(self.levels):
            if level:
                target = _zarr_array(zarr, (group, str(level)), shape, chunks, self.dtype, self.zarr_format, names)
                _downsample(
                    _SpatialView(group[str(level - 1)], self.letters), _SpatialView(target, self.letters), ratio
                )
            datasets.append({"path": str(level), "coordinateTransformations": transforms})
        write_multiscales_metadata(group, datasets, fmt=fmt, axes=self.axes_meta, name=self.name)
        if self.overall:
            multiscales = get_metadata(group)["multiscales"]
            multiscales[0]["coordinateTransformations"] = self.overall
            add_metadata(group, {"multiscales": multiscales}, fmt=fmt)
        add_metadata(group, {"image-label": {"version": fmt.version, "source": {"image": "../../"}}}, fmt=fmt)
        self._unrecord()
        _place(self.tmp, self.labels / self.name, self.overwrite)
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


def _spatial_index(letters: str, zyx) -> tuple:
    """The index of the block ``zyx`` in an array whose axes are ``letters`` (T, C, Z, Y, X), at point 0 of T and C."""
    return tuple(0 if a in "TC" else zyx["ZYX".index(a)] for a in letters)


class _SpatialView:
    """A Zarr array whose axes are ``letters`` (t, c, z, y, x), seen as (lead..., Z, Y, X) with t and c at point 0."""

    def __init__(self, array, letters):
        self.array, self.letters = array, letters
        self.shape = tuple(n for a, n in zip(letters, array.shape) if a in "ZYX")
        self.chunks = tuple(c for a, c in zip(letters, array.chunks) if a in "ZYX")
        self.dtype = array.dtype

    def _index(self, zyx) -> tuple:
        return _spatial_index(self.letters, zyx)

    def __getitem__(self, zyx):
        return self.array[self._index(zyx)]

    def __setitem__(self, zyx, value):
        self.array[self._index(zyx)] = value
