"""The file commands, from paths to written files: `train` and `predict` here, `densify` in
`sparseseg.commands.densify`, and suggest, preview and eval in `sparseseg.commands.review`, all served from this
module.

`train` reads a volume larger than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels in the slabs around its annotated
planes; `predict` reads, segments and writes block by block, so that memory does not grow with the volume.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sparseseg import io
from sparseseg.commands import review
from sparseseg.commands.densify import DensifyOptions, DensifyReport, densify, scan_for_slabs
from sparseseg.commands.outputs import (
    Outputs,
    block_sinks,
    log,
    read_pair,
    run_key,
    with_spacing,
)
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.blocks import Source
from sparseseg.io.paths import check_distinct
from sparseseg.large import bounded
from sparseseg.large.cluster import Cluster
from sparseseg.large.slabs import LabelScan
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model, calibrate, network_probabilities, resolve_device, segment_source, with_overlap
from sparseseg.method.fitting import check_training, fit
from sparseseg.method.modelfolder import check_model_folder, load_model, save_model
from sparseseg.method.progress import Progress
from sparseseg.method.streaming import BlockProgress
from sparseseg.method.training import TrainLog, ctrl_c_stops_training

PathLike = str | os.PathLike


@dataclass
class _TrainingPair:
    """One (volumes, labels) pair of `train_files`: read whole (``image``, ``annotation``), or opened and scanned for
    training on its slabs (``source``, ``labels``, ``scan``; `sparseseg.large.bounded`)."""

    path: Path
    shape: tuple[int, int, int]
    channels: int
    spacing: tuple[float, float, float] | None
    how: str
    image: np.ndarray | None = None
    annotation: Annotation | None = None
    source: Source | None = None
    labels: Source | None = None
    scan: LabelScan | None = None


def _whole_pair(source, labels: PathLike, unlabeled: int) -> _TrainingPair:
    image, annotation, how = read_pair(source, labels, unlabeled)
    source.close()
    return _TrainingPair(
        image.path, image.data.shape[1:], image.data.shape[0], image.spacing, how, image.data, annotation
    )


def _slab_pair(source, labels: PathLike, config: Config, init: Model | None) -> _TrainingPair | None:
    """A large volume's pair, its labels scanned (`sparseseg.large.slabs.scan_labels`); None where it needs the volume
    whole."""
    shape = tuple(source.shape[1:])
    scanned = scan_for_slabs(source, labels, config, None, init)
    if scanned is None:
        return None
    sparse, scan, _ = scanned
    return _TrainingPair(
        Path(source.path),
        shape,
        source.shape[0],
        source.spacing,
        f"{scan.how}; training on the slabs around the annotated planes",
        source=source,
        labels=sparse,
        scan=scan,
    )


def train_files(
    pairs: Sequence[tuple[Sequence[PathLike], PathLike]],
    folder: PathLike,
    config: Config = Config(),
    *,
    overwrite: bool = False,
    init: PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[Model, TrainLog, Path]:
    """Train one model on several sparsely annotated volumes, given as (volumes, labels) pairs, and save it as a model
    folder.

    The pair of a volume of more than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels whose annotation
    holds whole planes is not read whole, as densify does not read it: its labels are read a few
    planes at a time, training reads only the slabs around the annotated planes (normalised by
    the statistics of the whole volume, its class counts in the class weights) and calibration
    predicts only the windows over the annotated voxels, so the model is the one the whole
    volume gives. Smaller volumes, and annotations with no whole plane, are read whole.
    """
    if not pairs:
        raise InputError("give at least one pair of volume(s) and labels", param="pairs", value="none")
    check_distinct([p for volumes, labels in pairs for p in (*volumes, labels)] + [init], [], [folder])
    check_model_folder(folder, overwrite)
    device = resolve_device(config.device)  # 'auto' decided once; the model's config records where it trained
    config = replace(config, device=device.type)
    start_model = load_model(init) if init is not None else None
    opened, config = _open_pairs(pairs, config, start_model)
    images, annotations, wholes = _training_arrays(opened, config, start_model)
    with ctrl_c_stops_training(progress) as stoppable:  # a Ctrl-C in the calibration too still saves the model
        model, train_log = fit(images, annotations, config, stoppable, start_model, wholes)
        if model.config.calibrate:
            log.info("segmenting the %d training volume(s) to calibrate the class offsets", len(opened))
            model = calibrate(model, *_annotated_probabilities(model, opened, device))
    train_log = stoppable.told(train_log)
    if train_log.stopped_by == "interrupt":
        log.warning("training interrupted after %d steps: saving the model so far", train_log.iterations)
    return model, train_log, save_model(folder, model, overwrite)


def _open_pairs(pairs, config: Config, start_model: Model | None) -> tuple[list[_TrainingPair], Config]:
    """Each pair read whole or opened for its slabs, checked, and the config with the files' voxel size."""
    opened: list[_TrainingPair] = []
    for volumes, labels in pairs:
        pair, source = None, io.open_source(volumes)
        if math.prod(source.shape[1:]) > bounded.SLAB_THRESHOLD:
            pair = _slab_pair(source, labels, config, start_model)
        if pair is None:
            pair = _whole_pair(source, labels, config.unlabeled)
        if opened and pair.channels != opened[0].channels:
            raise InputError(f"{pair.path}: {pair.channels} channels, the first volume has {opened[0].channels}")
        config = with_spacing(config, pair)
        check_training(config, pair.shape, start_model)
        log.info("%s: %s", labels, pair.how)
        opened.append(pair)
    return opened, config


def _training_arrays(opened: Sequence[_TrainingPair], config: Config, start_model: Model | None):
    """What `fit` trains on: the images, annotations and `WholeVolume` (None: the image is the volume) of every pair,
    a large one's as the stacks of slabs around its planes (`sparseseg.large.bounded.read_slabs`)."""
    smallest = tuple(min(p.shape[i] for p in opened) for i in range(3))  # what fit plans the patch for
    images, annotations, wholes = [], [], []
    for pair in opened:
        if pair.scan is None:
            images.append(pair.image)
            annotations.append(pair.annotation)
            wholes.append(None)
        else:
            stacks, stack_annotations, whole = bounded.read_slabs(
                pair.source, pair.labels, pair.scan, config, start_model, smallest
            )
            images += stacks
            annotations += stack_annotations
            wholes += [whole] * len(stacks)
    return images, annotations, wholes


def _annotated_probabilities(
    model: Model, opened: Sequence[_TrainingPair], device: torch.device
) -> tuple[list[np.ndarray], list[Annotation]]:
    """The network's probabilities of the annotated voxels of each training pair, on ``device``, and their
    annotations."""
    annotated, annotations = [], []
    for pair in opened:
        if pair.scan is None:
            annotated.append(network_probabilities(model, pair.image, device)[0][:, pair.annotation.mask])
            annotations.append(pair.annotation)
        else:
            probabilities, annotation = bounded.annotated_probabilities(
                model, pair.source, pair.labels, pair.scan, device
            )
            annotated.append(probabilities)
            annotations.append(annotation)
    return annotated, annotations


@dataclass(frozen=True)
class PredictOptions:
    """What `predict` does besides reading the model and the volume and writing the labels.

    ``device``: where to predict ('auto': CUDA when available), whatever the model was trained on; ``tta``: average
    over flips (None: as trained); ``resume``: go on with the Zarr output an interrupted run left; ``overlap``: the
    windows' overlap across the annotated planes (None: the model's; `sparseseg.method.core.with_overlap`).
    """

    outputs: Outputs = Outputs()
    device: str = "auto"
    tta: bool | None = None
    cluster: Cluster = Cluster()
    resume: bool = False
    overlap: float | None = None


@dataclass
class PredictReport:
    """What `predict` did: the model, the sliding windows, the seconds of inference, the files written."""

    model: Model
    windows: list[tuple[int, int, int]]
    seconds: float
    written: list[Path]


def predict(
    folder: PathLike,
    volumes: Sequence[PathLike],
    out: PathLike,
    options: PredictOptions = PredictOptions(),
    progress: BlockProgress | None = None,
) -> PredictReport:
    """Apply a saved model to a new volume (the fully automatic setting) and write the segmentation.

    The volume is read and segmented block by block and the outputs are written as the blocks
    come, so memory does not grow with the volume (only ``options.outputs.preview`` reads the volume
    and the result whole). On a large volume a lower ``options.overlap`` is faster (0 runs a quarter of the windows of
    0.75 along that axis); a model saved before sparseseg trained with the planes at any depth of a patch loses IoU
    by it.

    A Zarr or OME-Zarr output interrupted by Ctrl-C is kept, unfinished, in its hidden partial
    folder (`sparseseg.errors.Interrupted` says where); the same call with ``options.resume`` takes it
    up and writes only the blocks it does not hold whole. It is taken up only by a run of the
    same model folder (its files' hash), volumes (paths, sizes, times), ``tta`` and sparseseg
    version, and refused for other formats. ``outputs.overwrite`` still says whether the
    finished output may replace an earlier one.
    """
    outputs = options.outputs
    if options.resume:
        for path in (out, outputs.probabilities):
            if path is not None:
                io.check_resumable(path)
    options.cluster.check()
    outputs.check([folder, *volumes], [out])
    device = resolve_device(options.device)  # 'auto' decided once; a cluster's workers are told its name
    options = replace(options, device=device.type)
    model = with_overlap(load_model(folder), options.overlap)
    source = io.open_source(volumes)
    if source.shape[0] != model.in_channels:
        raise InputError(
            f"{source.path}: the model {folder} takes {model.in_channels} channel(s), got {source.shape[0]}"
        )
    key = run_key(folder, volumes, model.config.tta if options.tta is None else options.tta)
    resumable = io.Resumable(key, options.resume)
    shared = options.cluster.used
    with io.outputs_together([out, outputs.probabilities, outputs.preview]):
        sinks = block_sinks(out, outputs, model, source.shape[1:], source, resumable=resumable, shared=shared)
        if not shared:
            windows, seconds = segment_source(model, source, *sinks, device=device, tta=options.tta, progress=progress)
        else:
            windows, seconds = _on_cluster(model, folder, source, sinks, options, progress)
        written = [Path(out)] + ([Path(outputs.probabilities)] if sinks[1] is not None else [])
        if outputs.preview is not None:
            written.append(outputs.write_preview(volumes, out))
    return PredictReport(model, windows, seconds, written)


def _on_cluster(model, folder, source, sinks, options: PredictOptions, progress):
    """Segment on a dask cluster (`sparseseg.large.cluster`) with ``model``, saved in ``folder``; the windows and the
    seconds."""
    from sparseseg.large import cluster

    start = time.perf_counter()
    try:
        dask_client = options.cluster.client()
    except BaseException:
        for sink in sinks:
            if sink is not None:
                sink.release()
        raise
    with dask_client:
        windows = cluster.segment_on_cluster(
            model,
            folder,
            source,
            sinks,
            dask_client=dask_client,
            device=options.device,
            tta=options.tta,
            progress=progress,
        )
    return windows, time.perf_counter() - start


#: The commands that look at volumes and segmentations, served here too (see `sparseseg.commands.review`).
suggest, preview, evaluate = review.suggest, review.preview, review.evaluate

__all__ = [
    "Cluster",
    "DensifyOptions",
    "DensifyReport",
    "Outputs",
    "PredictOptions",
    "PredictReport",
    "densify",
    "evaluate",
    "predict",
    "preview",
    "suggest",
    "train_files",
]
