"""napari's reader and writer for sparseseg's formats (`sparseseg.io`): volumes in, labels out.

A volume opens as an image layer, or as a Labels layer when it holds a few whole-number
values (a label volume); its voxel size becomes the layer's ``scale``. A model folder is
opened with the widget's "Load model".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseseg import io
from sparseseg.errors import InputError

#: A volume with at most this many distinct whole-number values opens as labels.
MAX_LABEL_VALUES = 64


def get_reader(path):
    """The reader for ``path`` (a volume), or None where sparseseg does not read it."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    try:
        io.suffix_of(path)
    except InputError:
        return None
    return _read_volume


def _is_labels(data: np.ndarray) -> bool:
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.integer):
        return False
    step = max(1, round((data.size / 1e6) ** (1 / 3)))  # about a million voxels are enough to tell
    return len(np.unique(data[::step, ::step, ::step])) <= MAX_LABEL_VALUES


def _read_volume(path):
    """Read a volume with `sparseseg.io.read_volume`: [(data, metadata, layer type)]."""
    path = path[0] if isinstance(path, list) else path
    volume = io.read_volume(path)
    meta = {"name": Path(str(volume.path)).name, "scale": volume.spacing or (1.0, 1.0, 1.0)}
    if volume.data.ndim == 4:
        return [(volume.data, dict(meta, channel_axis=0), "image")]
    return [(volume.data, meta, "labels" if _is_labels(volume.data) else "image")]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write a Labels layer with `sparseseg.io.write_volume`, in the format of ``path``, with the layer's voxel size."""
    from sparseseg.method.annotation import check_class_ids

    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"sparseseg writes 3D labels (Z, Y, X), this layer has shape {data.shape}")
    check_class_ids(data, "labels layer")
    data = data.astype(np.uint8 if data.max(initial=0) <= 255 else np.uint16)
    scale = tuple(float(s) for s in meta.get("scale", (1.0, 1.0, 1.0))[-3:])
    reference = io.Volume(data, scale, Path(path))
    return [str(io.write_volume(path, data, reference=reference, overwrite=True))]
