"""What densify, train and predict share: the extra outputs (`Outputs`), the checks and reads of a sparsely annotated
volume, the block sinks of a block-by-block segmentation and its fingerprint, and the handling of Ctrl-C.

Every path and option that can be checked without training is checked first (`Outputs.check`,
`sparseseg.io.paths`): bad input raises `InputError` before any work, and an input is never an output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sparseseg import __version__, io
from sparseseg.commands.review import same_shape
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.paths import check_distinct
from sparseseg.method.annotation import Annotation, parse_planes, read_annotation
from sparseseg.method.core import (
    Model,
    Segmentation,
    labels_dtype,
    output_chunks,
)
from sparseseg.method.modelfolder import model_digest
from sparseseg.method.progress import Progress
from sparseseg.method.training import CtrlC, TrainLog, ctrl_c_stops_training

log = logging.getLogger("sparseseg")


PathLike = str | os.PathLike


@dataclass(frozen=True)
class Outputs:
    """Where the optional extra outputs of densify and predict go, and whether earlier outputs may be replaced."""

    probabilities: PathLike | None = None
    preview: PathLike | None = None
    overwrite: bool = False

    def check(
        self,
        inputs: Sequence[PathLike | io.Location | None],
        volumes: Sequence[PathLike | None],
        folders: Sequence[PathLike | None] = (),
    ) -> None:
        """Check every output before any work: ``volumes`` are the command's own volume outputs; ``inputs`` the paths
        read, or the locations of the inputs opened (`sparseseg.io.paths.check_distinct`)."""
        for path in [*volumes, self.probabilities]:
            if path is not None:
                io.check_output(path, self.overwrite)
        if self.preview is not None:
            io.check_output(self.preview, self.overwrite, suffixes=(".png",))
        check_distinct(inputs, [*volumes, self.probabilities, self.preview], folders)

    def write(self, image: io.Volume, segmentation: Segmentation, planes: dict | None) -> list[Path]:
        written = []
        if self.probabilities is not None:
            scaled = np.round(segmentation.probabilities * 255).astype(np.uint8)
            written.append(
                io.write_volume(self.probabilities, scaled, reference=image.reference, overwrite=self.overwrite)
            )
        if self.preview is not None:
            from sparseseg.commands.preview import render_preview

            picture = render_preview(image.data, segmentation.labels, planes=planes, spacing=image.spacing)
            written.append(io.write_png(self.preview, picture, overwrite=self.overwrite))
        return written

    def write_preview(
        self,
        volumes: Sequence[PathLike],
        labels: PathLike,
        planes: dict | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> Path:
        """The preview of a segmentation already written to ``labels``: reads the volume and the labels whole."""
        from sparseseg.commands.preview import render_preview

        image = io.read_image(volumes)
        picture = render_preview(
            image.data, io.read_labels(labels).data, planes=planes, spacing=spacing or image.spacing
        )
        return io.write_png(self.preview, picture, overwrite=self.overwrite)


def with_spacing(config: Config, image: io.Volume) -> Config:
    """``config`` with the file's voxel size (`file_spacing`) where the config gives none."""
    if config.spacing is None and image.spacing is not None:
        return replace(config, spacing=file_spacing(image))
    return config


def file_spacing(image) -> tuple[float, float, float] | None:
    """The voxel size a read volume's (or an open Source's) file gives, None where it gives none; one that is not three
    finite numbers > 0 is an `InputError` naming the file (and --spacing as the way round it)."""
    if image.spacing is None:
        return None
    spacing = tuple(image.spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"'{getattr(image, 'path', 'the volume')}': its voxel size (z,y,x) "
            f"{','.join(f'{s:g}' for s in spacing)} is not three positive numbers; give the right one "
            "with --spacing"
        )
    return spacing


def read_pair(
    source, labels: PathLike, unlabeled: int, planes: list[str] | None = None, spacing=None
) -> tuple[io.Volume, Annotation, str]:
    """The whole image of an open Source (`sparseseg.io.open_source`), float32 (C, Z, Y, X), and its sparse labels as
    an `Annotation`; also how its annotated voxels were found. The image's voxel size is ``spacing`` where given, else
    its file's (`file_spacing`)."""
    spacing = tuple(spacing) if spacing is not None else file_spacing(source)
    data = source.read(tuple(slice(0, n) for n in source.shape[1:]))
    image = io.Volume(data, spacing, source.path, source.nifti, source.unit)
    sparse = io.read_labels(labels)
    same_shape(sparse, data.shape[1:])
    plane_dict = parse_planes(planes, sparse.data.shape) if planes else None
    annotation, how = read_annotation(sparse.data, unlabeled, plane_dict, name=str(sparse.path))
    return image, annotation, how


def stopping_on_ctrl_c(progress: Progress | None, partial: bool):
    """Training's progress callback: with ``partial``, Ctrl-C stops the training and the run goes on with what was
    trained (`sparseseg.method.training.ctrl_c_stops_training`); without, Ctrl-C quits at once."""
    return ctrl_c_stops_training(progress) if partial else contextlib.nullcontext(CtrlC(progress))


def stop_if_interrupted(train_log: TrainLog, partial: bool) -> None:
    if train_log.stopped_by == "interrupt":
        if not partial:
            raise KeyboardInterrupt
        log.warning("training interrupted after %d steps: segmenting with the model so far", train_log.iterations)


def run_key(folder: PathLike, volumes: Sequence[PathLike], tta: bool) -> dict:
    """The fingerprint of a block-by-block segmentation: what an output an interrupted run left must match to be
    resumed."""
    return {
        "sparseseg": __version__,
        "model": model_digest(folder),
        "volumes": [io.stamp(v) for v in volumes],
        "tta": bool(tta),
    }


def block_sinks(
    out: PathLike,
    outputs: Outputs,
    model: Model,
    shape,
    reference,
    *,
    spacing=None,
    resumable: io.Resumable | None = None,
    shared: bool = False,
):
    """The labels sink (and the probabilities sink, chunked alike) of a block-by-block segmentation of a (Z, Y, X)
    ``shape``.

    A chunked output is chunked in whole steps of the model's windows (`sparseseg.method.core.output_chunks`).

    ``spacing``, else ``reference`` (the input), gives the voxel size; ``resumable`` goes to `io.create_sink`;
    ``shared``: several workers write them (a chunked output is needed). Where one cannot be
    made, those made are let go (a resumed one left as it was) before the error goes on.
    """
    made = []
    try:
        labels = io.create_sink(
            out,
            shape,
            labels_dtype(model.classes),
            spacing=spacing,
            reference=reference,
            overwrite=outputs.overwrite,
            chunks=output_chunks(model, shape),
            resumable=resumable,
        )
        made.append(labels)
        probabilities = None
        if outputs.probabilities is not None:
            probabilities = io.create_sink(
                outputs.probabilities,
                (len(model.classes),) + shape,
                np.uint8,
                spacing=spacing,
                reference=reference,
                overwrite=outputs.overwrite,
                chunks=labels.chunks,
                resumable=resumable,
            )
            made.append(probabilities)
        if shared:
            from sparseseg.large import cluster

            cluster.check_shared(labels, probabilities)  # before a cluster is started
    except BaseException:
        for sink in made:
            sink.release()
        raise
    return labels, probabilities
