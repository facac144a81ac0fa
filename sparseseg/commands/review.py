"""The file commands that look at volumes and segmentations: suggest, preview and eval.

Like `sparseseg.commands.workflows` (which also serves them to the command line), each reads its
inputs through `sparseseg.io`, checks every path first and raises `InputError` for bad
input. `suggest` reads the volume block by block, so its memory does not grow with the volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseseg import UNLABELED, io
from sparseseg.errors import InputError
from sparseseg.io.paths import check_distinct
from sparseseg.large import bounded
from sparseseg.large.slabs import scan_labels
from sparseseg.method.annotation import annotated_mask, check_class_ids, parse_planes
from sparseseg.method.core import resolve_device
from sparseseg.method.metrics import Scores, score
from sparseseg.method.modelfolder import load_model

PathLike = str | os.PathLike


def same_shape(volume: io.Volume, shape: tuple[int, ...], what: str = "the volume's") -> None:
    """Raise `InputError` unless ``volume`` (labels, a mask, ...) has ``shape``."""
    if volume.data.shape[-3:] != tuple(shape) or volume.data.ndim < 3:
        raise InputError(f"{volume.path}: shape {volume.data.shape} differs from {what} {tuple(shape)}")


def open_labels(path: PathLike, shape: tuple[int, int, int]):
    """A sparse label volume of ``shape`` (Z, Y, X) as a (1, Z, Y, X) source, read as it is needed."""
    sparse = io.open_source(path)
    if sparse.shape[0] != 1:
        raise InputError(f"{sparse.path}: a label volume must be 3D (Z, Y, X), got shape {tuple(sparse.shape)}")
    if tuple(sparse.shape[1:]) != tuple(shape):
        raise InputError(f"{sparse.path}: shape {tuple(sparse.shape[1:])} differs from the volume's {tuple(shape)}")
    return sparse


def suggest(
    volumes: Sequence[PathLike],
    *,
    model: PathLike | None = None,
    probabilities: PathLike | None = None,
    slices: PathLike | None = None,
    unlabeled: int = UNLABELED,
    top: int = 5,
    device: str = "auto",
):
    """Rank the planes not yet annotated by the model's uncertainty (mean predictive entropy).

    The uncertainty is taken block by block, from the model's prediction or from the
    probabilities file, so memory does not grow with the volume.
    """
    from sparseseg.method.uncertainty import rank_planes

    if model is None and probabilities is None:
        raise InputError("give a model folder (to predict) or probabilities (from densify's probabilities output)")
    if top < 1:
        raise InputError("must be at least 1", param="top", value=top)
    device = resolve_device(device)  # 'auto' decided once
    image = io.open_source(volumes)
    shape = tuple(image.shape[1:])
    if probabilities is not None:
        uncertainty = bounded.file_uncertainty(io.open_source(probabilities), shape)
    else:
        uncertainty = bounded.model_uncertainty(load_model(model), image, device)
    annotated = None
    if slices is not None:
        sparse = open_labels(slices, shape)
        annotated = scan_labels(sparse, unlabeled, name=str(sparse.path)).planes
    return rank_planes(uncertainty, annotated, top)


def preview(
    volumes: Sequence[PathLike],
    labels: PathLike | None,
    out: PathLike,
    *,
    centre: tuple[int, int, int] | None = None,
    planes: list[str] | None = None,
    unlabeled: int = UNLABELED,
    overwrite: bool = False,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Three orthogonal planes through a volume with its labels overlaid, written as PNG.

    The planes are drawn to scale by ``spacing`` (z, y, x), else by the file's voxel size.
    """
    from sparseseg.commands.preview import render_preview

    io.check_output(out, overwrite, suffixes=(".png",))
    check_distinct([*volumes, labels], [out])
    image = io.read_image(volumes)
    data = plane_dict = None
    if labels is not None:
        label_volume = io.read_labels(labels)
        data = label_volume.data
        same_shape(label_volume, image.data.shape[1:])
        if planes:
            plane_dict = parse_planes(planes, data.shape)
        elif np.any(data == unlabeled):
            _, plane_dict, _ = annotated_mask(data, unlabeled, name=str(label_volume.path))
    try:
        picture = render_preview(
            image.data, data, planes=plane_dict, centre=centre, spacing=spacing or image.spacing, unlabeled=unlabeled
        )
    except ValueError as exc:
        raise InputError(f"{out}: {exc}") from exc
    return io.write_png(out, picture, overwrite)


def evaluate(pred: PathLike, gt: PathLike, ignore: PathLike | None = None, unlabeled: int = UNLABELED) -> Scores:
    """Score a segmentation file against a ground-truth file.

    Both must hold whole-number class ids. With ``ignore`` (a sparse label file), only the
    voxels that were not annotated there are scored: how well the missing planes were filled in.
    """
    prediction = io.read_labels(pred)
    truth = io.read_labels(gt)
    for volume in (prediction, truth):
        check_class_ids(volume.data, str(volume.path))
    same_shape(prediction, truth.data.shape, f"{truth.path}")
    mask = None
    if ignore is not None:
        sparse = io.read_labels(ignore)
        same_shape(sparse, truth.data.shape, f"{truth.path}")
        annotated, _, _ = annotated_mask(sparse.data, unlabeled, name=str(sparse.path))
        mask = ~annotated
        if not mask.any():
            raise InputError(f"{sparse.path}: every voxel is annotated, nothing is left to score")
    return score(prediction.data, truth.data, mask)
