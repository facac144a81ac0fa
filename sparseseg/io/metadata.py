"""What a file says about its volume, in sparseseg's terms: its axes as (C, Z, Y, X), its voxel size and unit.

Nothing here opens a file: the format modules read their metadata and pass it to these helpers.
"""

from __future__ import annotations

import math

import numpy as np

from sparseseg.errors import InputError

#: The unit written where a voxel size is known but its unit is not (the user's --spacing).
DEFAULT_UNIT = "um"

_UNITS = {
    "um": "um",
    "µm": "um",
    "\u03bcm": "um",
    "\\u00b5m": "um",
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "nm": "nm",
    "nanometer": "nm",
    "nanometre": "nm",
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "cm": "cm",
    "centimeter": "cm",
    "centimetre": "cm",
    "m": "m",
    "meter": "m",
    "metre": "m",
    "angstrom": "angstrom",
    "å": "angstrom",
}
_NGFF_UNITS = {
    "um": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "angstrom": "angstrom",
}
_MICROMETRES = {"nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "angstrom": 1e-4}


def _unit(value) -> str | None:
    """A unit as sparseseg keeps it ('um', 'nm', 'mm', ...), or None for none or one it does not know."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None
    return _UNITS.get(value.strip().lower())


def _attrs_spacing(attrs) -> tuple[tuple[float, float, float] | None, str | None]:
    """The voxel size a Zarr array's or HDF5 dataset's attributes give, as sparseseg and common tools write it."""
    for key in ("spacing", "element_size_um", "resolution", "voxel_size"):
        value = attrs.get(key)
        try:
            spacing = tuple(float(v) for v in np.asarray(value, dtype=float).ravel())
        except (TypeError, ValueError):
            continue
        if len(spacing) == 3 and all(math.isfinite(s) and s > 0 for s in spacing):
            return spacing, ("um" if key == "element_size_um" else _unit(attrs.get("unit")))
    return None, None


def _channel_axis(axes: str, shape: tuple[int, ...], path) -> int:
    for name in "CS":
        if name in axes:
            return axes.index(name)
    if shape[0] <= 16:
        return 0
    if shape[-1] <= 16:
        return len(shape) - 1
    raise InputError(f"{path}: 4D volume with axes {axes!r} and shape {shape}: cannot tell which axis holds channels")


def _file_axes(shape: tuple[int, ...], letters: str, path) -> str:
    """The axes of a 3D or 4D array whose file names them loosely: 'ZYX', or with a channel axis 'C' somewhere."""
    if len(shape) == 3:
        return "ZYX"
    if len(shape) == 4:
        axes = list("ZYX")
        axes.insert(_channel_axis(letters, shape, path), "C")
        return "".join(axes)
    raise InputError(f"{path}: expected a 3D volume (Z, Y, X), got an array of shape {tuple(shape)}")


_AXIS_NAMES = {
    "z": "Z",
    "y": "Y",
    "x": "X",
    "c": "C",
    "ch": "C",
    "channel": "C",
    "channels": "C",
    "t": "T",
    "time": "T",
}


def _named_axes(names, shape, path, strict: bool = False) -> str | None:
    """The axes of an array whose file names each axis (Zarr dimension names, NGFF axes, HDF5 dimension labels).

    An axis of one point that is not z, y, x or c (a time point) is dropped. Returns None where
    the names do not say (``strict``: raises).
    """
    letters = []
    for name, n in zip(names, shape):
        letter = _AXIS_NAMES.get(str(name).strip().lower()) if name is not None else None
        if letter is None and n == 1:
            letter = "T"
        letters.append(letter)
    spatial = [a for a in letters if a and a in "ZYX"]
    if None in letters or sorted(spatial) != ["X", "Y", "Z"] or letters.count("C") > 1:
        if strict:
            raise InputError(f"{path}: axes {list(names)} with shape {tuple(shape)}: need z, y and x (and at most c)")
        return None
    for letter, name, n in zip(letters, names, shape):
        if letter == "T" and n != 1:
            raise InputError(
                f"{path}: axis {name!r} has {n} points; sparseseg reads one (Z, Y, X) volume, give one time point"
            )
    return "".join(letters)
