"""Reading and writing volumes: 3D/4D TIFF and NIfTI. The only module that touches files.

Inside sparseseg every volume is a numpy array with axes (Z, Y, X), or (C, Z, Y, X) for
several channels, and a voxel size ``spacing`` as (z, y, x). NIfTI arrays are stored
(X, Y, Z) on disk, so they are transposed on reading and back on writing, and written with
the affine and header of the input they came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparseseg.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES


@dataclass(frozen=True)
class Volume:
    """An array read from a file, with what is needed to write results in kind.

    Attributes
    ----------
    data : ndarray
        (Z, Y, X) or (C, Z, Y, X).
    spacing : tuple of float or None
        Voxel size (z, y, x) from the file's metadata, None where the file does not say.
    path : Path
        The file it came from.
    nifti : object or None
        The nibabel image of a NIfTI input (its affine and header are reused on writing).
    """

    data: np.ndarray
    spacing: tuple[float, float, float] | None
    path: Path
    nifti: Any = None


def suffix_of(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` ('.tif', '.tiff', '.nii' or '.nii.gz'), lower case."""
    name = Path(path).name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(f"{path}: unsupported file type (use one of {', '.join(SUFFIXES)})")


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    suffix_of(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


@contextlib.contextmanager
def _library_messages():
    """Collect what tifffile, nibabel and others log or warn while reading, instead of printing it.

    Yields a list that fills with the messages, so that they can be folded into sparseseg's
    own one-line message.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().replace("\n", " "))

    loggers = [logging.getLogger(name) for name in ("tifffile", "nibabel")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers[:] = [Collect()]
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message).replace("\n", " ") for w in caught)
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers[:] = handlers
            lg.propagate = propagate


def _with(messages: list[str]) -> str:
    return "; ".join(dict.fromkeys(m.strip()[:160] for m in messages if m.strip()))


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume, or a 4D one with a channel axis, from a TIFF or NIfTI file.

    Returns a `Volume` whose data is (Z, Y, X) or (C, Z, Y, X), in the file's dtype.
    """
    path = _existing(path)
    with _library_messages() as messages:
        try:
            if suffix_of(path) in TIFF_SUFFIXES:
                data, spacing = _read_tiff(path)
                nifti = None
            else:
                data, spacing, nifti = _read_nifti(path)
            failure = None
        except InputError:
            raise
        except Exception as exc:  # a corrupt or foreign file: say which, and why
            failure = exc
    if failure is not None:
        raise InputError(f"{path}: cannot read ({_with([str(failure)] + messages)})") from failure
    if data.ndim not in (3, 4) or min(data.shape) < 1:
        said = f" ({_with(messages)})" if messages else ""
        raise InputError(f"{path}: expected a 3D volume (Z, Y, X), got an array of shape {data.shape}{said}")
    if messages:  # the file was read, but its reader had doubts: say so, once, in sparseseg's words
        logging.getLogger("sparseseg").warning("%s: read with warnings (%s)", path, _with(messages))
    return Volume(data, spacing, path, nifti)


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        spacing = _tiff_spacing(tif)
    if data.ndim == 4:
        data = np.moveaxis(data, _channel_axis(axes, data.shape, path), 0)
    return data, spacing


def _channel_axis(axes: str, shape: tuple[int, ...], path: Path) -> int:
    for name in "CS":
        if name in axes:
            return axes.index(name)
    if shape[0] <= 16:
        return 0
    if shape[-1] <= 16:
        return len(shape) - 1
    raise InputError(f"{path}: 4D TIFF with axes {axes!r} and shape {shape}: cannot tell which axis holds channels")


def _tiff_spacing(tif) -> tuple[float, float, float] | None:
    page = tif.pages[0]
    z = None
    if tif.imagej_metadata:
        z = tif.imagej_metadata.get("spacing")
    elif tif.shaped_metadata:
        z = tif.shaped_metadata[0].get("spacing")
    resolution = []
    for name in ("YResolution", "XResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        resolution.append(denominator / numerator if numerator else None)
    y, x = resolution
    if z is None or y is None or x is None:
        return None
    spacing = (float(z), float(y), float(x))
    # A TIFF without a real calibration says 1 pixel per unit on every axis: treat that as unknown.
    return None if spacing == (1.0, 1.0, 1.0) else spacing


def _read_nifti(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    zooms = tuple(float(v) for v in image.header.get_zooms()[:3])
    if data.ndim == 4:  # nibabel: (X, Y, Z, C) -> (C, Z, Y, X)
        data = data.transpose(3, 2, 1, 0)
    elif data.ndim == 3:
        data = data.transpose(2, 1, 0)
    spacing = (zooms[2], zooms[1], zooms[0]) if len(zooms) == 3 else None
    return np.ascontiguousarray(data), spacing, image


def read_image(paths: Sequence[str | os.PathLike]) -> Volume:
    """Read one or more volumes of the same shape as the channels of one float32 (C, Z, Y, X) image.

    Raises `InputError` for a 2D image, shapes that differ, or NaN/Inf values.
    """
    if not paths:
        raise InputError("no input volume given")
    volumes = [read_volume(p) for p in paths]
    channels = []
    for volume in volumes:
        data = volume.data if volume.data.ndim == 4 else volume.data[None]
        if channels and data.shape[1:] != channels[0].shape[1:]:
            raise InputError(
                f"{volume.path}: shape {data.shape[1:]} differs from {volumes[0].path} {channels[0].shape[1:]}; "
                "channels must have the same shape"
            )
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise InputError(f"{volume.path}: unsupported data type {data.dtype}")
        data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            raise InputError(f"{volume.path}: contains NaN or Inf values")
        channels.append(data)
    first = volumes[0]
    return Volume(np.concatenate(channels, axis=0), first.spacing, first.path, first.nifti)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read a label volume (Z, Y, X). Values are checked later, by `sparseseg.labels`."""
    volume = read_volume(path)
    if volume.data.ndim != 3:
        raise InputError(f"{volume.path}: a label volume must be 3D (Z, Y, X), got shape {volume.data.shape}")
    return volume


def check_output(path: str | os.PathLike, overwrite: bool = False, suffixes: Sequence[str] = SUFFIXES) -> Path:
    """Check before any work that ``path`` can be written: known suffix, folder exists, not there already."""
    path = Path(path)
    if not any(path.name.lower().endswith(s) for s in suffixes):
        raise InputError(f"{path}: unsupported output type (use one of {', '.join(suffixes)})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists already (use --overwrite to replace it)")
    return path


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    name = path.name
    suffix = next((s for s in SUFFIXES + (".png", ".json", ".pt", ".csv") if name.lower().endswith(s)), "")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: nothing is left behind, the earlier file is kept
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_volume(path: str | os.PathLike, data: np.ndarray, reference: Volume | None = None, overwrite: bool = False) -> Path:
    """Write a (Z, Y, X) or (C, Z, Y, X) array atomically, in the format of ``path``'s suffix.

    A TIFF gets the voxel size of ``reference``; a NIfTI gets its affine and header.
    """
    path = check_output(path, overwrite)
    if suffix_of(path) in TIFF_SUFFIXES:
        _atomic(path, lambda tmp: _write_tiff(tmp, data, reference.spacing if reference else None))
    else:
        _atomic(path, lambda tmp: _write_nifti(tmp, data, reference))
    return path


def _write_tiff(path: Path, data: np.ndarray, spacing) -> None:
    import tifffile

    axes = "ZYX" if data.ndim == 3 else "CZYX"
    kwargs: dict[str, Any] = {"compression": "zlib", "metadata": {"axes": axes}, "photometric": "minisblack"}
    if spacing is not None:
        z, y, x = spacing
        kwargs["resolution"] = (1.0 / x, 1.0 / y)  # tifffile: X, then Y
        kwargs["metadata"]["spacing"] = z
    tifffile.imwrite(path, data, **kwargs)


def _write_nifti(path: Path, data: np.ndarray, reference: Volume | None) -> None:
    import nibabel as nib

    array = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    like = reference.nifti if reference is not None else None
    if like is None:
        spacing = reference.spacing if reference is not None and reference.spacing else (1.0, 1.0, 1.0)
        image = nib.Nifti1Image(array, np.diag([spacing[2], spacing[1], spacing[0], 1.0]))
    else:
        header = like.header.copy()
        header.set_data_dtype(array.dtype)
        image = nib.Nifti1Image(array, like.affine, header)
        image.header.set_slope_inter(1, 0)
    nib.save(image, str(path))


def write_png(path: str | os.PathLike, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG file, atomically."""
    from PIL import Image

    path = check_output(path, overwrite, suffixes=(".png",))
    _atomic(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
    return path


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False, suffixes: Sequence[str] = (".json", ".csv")) -> Path:
    """Write a text file (a JSON or CSV report), atomically."""
    path = check_output(path, overwrite, suffixes=suffixes)
    _atomic(path, lambda tmp: tmp.write_text(text))
    return path


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n", overwrite, suffixes=(".json",))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read JSON ({exc})") from exc
