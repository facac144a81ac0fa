"""The file commands: densify, train, predict, suggest, preview and eval, from paths to written files.

Each reads its inputs through `sparseseg.io`, calls `sparseseg.method.core` and writes its outputs
(suggest, preview and eval live in `sparseseg.commands.review` and are served here too). `densify`
of a volume larger than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels reads only the slabs
around the annotated planes and segments block by block (`sparseseg.large.bounded`), so its
memory does not grow with the volume; `train` reads such a volume's slabs the same way. A
smaller one is read whole, as it always was.
Every path and option that can be checked without training is checked first (`check_paths`,
`sparseseg.io.paths`): bad input raises `InputError` before any work, an input is never an
output, and outputs are written only at the end, each atomically.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sparseseg import __version__, io
from sparseseg.commands import review
from sparseseg.commands.review import open_labels, same_shape
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.blocks import Source
from sparseseg.io.paths import check_distinct
from sparseseg.large import bounded
from sparseseg.large.slabs import LabelScan, scan_labels, write_weights
from sparseseg.method.annotation import Annotation, check_two_classes, parse_planes, read_annotation
from sparseseg.method.core import (
    Model,
    Segmentation,
    calibrate,
    check_training,
    fit,
    labels_dtype,
    loss_weights,
    network_probabilities,
    output_chunks,
    resolve_device,
    segment_source,
    with_overlap,
)
from sparseseg.method.ensemble import fit_estimated, segment_estimated
from sparseseg.method.modelfolder import check_model_folder, load_model, model_digest, save_model
from sparseseg.method.streaming import BlockProgress
from sparseseg.method.training import CtrlC, Progress, TrainLog, ctrl_c_stops_training

log = logging.getLogger("sparseseg")

PathLike = str | os.PathLike


@dataclass
class Outputs:
    """Where the optional extra outputs of densify and predict go, and whether earlier outputs may be replaced."""

    probabilities: PathLike | None = None
    preview: PathLike | None = None
    overwrite: bool = False

    def check(
        self,
        inputs: Sequence[PathLike | None],
        volumes: Sequence[PathLike | None],
        folders: Sequence[PathLike | None] = (),
    ) -> None:
        """Check every output before any work: ``volumes`` are the command's own volume outputs."""
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
            written.append(io.write_volume(self.probabilities, scaled, reference=image, overwrite=self.overwrite))
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


@dataclass
class DensifyReport:
    """What `densify` did: how the annotation was read, the model, the training log, the files written.

    ``segmentation.labels`` and ``.probabilities`` are None where the volume was segmented
    block by block into the files (`sparseseg.large.bounded`).
    """

    how: str
    model: Model
    train_log: TrainLog
    segmentation: Segmentation
    written: list[Path]

    @property
    def interrupted(self) -> bool:
        return self.train_log.stopped_by == "interrupt"


def with_spacing(config: Config, image: io.Volume) -> Config:
    """``config`` with the file's voxel size where the config gives none; a file's voxel size that is not three finite
    numbers > 0 is an `InputError` naming the file (and --spacing as the way round it)."""
    if config.spacing is None and image.spacing is not None:
        spacing = tuple(image.spacing)
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputError(
                f"'{getattr(image, 'path', 'the volume')}': its voxel size (z,y,x) "
                f"{','.join(f'{s:g}' for s in spacing)} is not three positive numbers; give the right one "
                "with --spacing"
            )
        return replace(config, spacing=spacing)
    return config


def read_pair(
    volumes: Sequence[PathLike], labels: PathLike, unlabeled: int, planes: list[str] | None = None
) -> tuple[io.Volume, Annotation, str]:
    """Read an image and its sparse labels as an `Annotation`; also how its annotated voxels were found."""
    image = io.read_image(volumes)
    sparse = io.read_labels(labels)
    same_shape(sparse, image.data.shape[1:])
    plane_dict = parse_planes(planes, sparse.data.shape) if planes else None
    annotation, how = read_annotation(sparse.data, unlabeled, plane_dict, name=str(sparse.path))
    return image, annotation, how


def densify(
    volumes: Sequence[PathLike],
    labels: PathLike,
    out: PathLike,
    config: Config = Config(),
    *,
    planes: list[str] | None = None,
    weights_out: PathLike | None = None,
    outputs: Outputs = Outputs(),
    save_model_to: PathLike | None = None,
    init: PathLike | None = None,
    partial: bool = True,
    progress: Progress | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> DensifyReport:
    """Densify from files: read, check, train, segment and write.

    A volume of more than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels whose annotation holds
    whole planes is trained on the slabs around them and segmented block by block into the
    outputs (the report's segmentation then holds no arrays, only its seconds and windows);
    only ``outputs.preview`` reads it whole. Every input and output path is checked before training starts. Ctrl-C
    during training
    ends it early and the segmentation is made with the model trained so far (the report
    says ``interrupted``); with ``partial=False`` nothing is written then and
    KeyboardInterrupt is raised.

    With ``workers`` (a local dask cluster) or ``scheduler`` (an existing one's address) the
    training stays here and the dense inference after it goes over the cluster (see
    `_segment_on_cluster`): the same labels, written block by block; the report's
    segmentation then holds the labels read back and no probabilities.
    """
    if workers is not None or scheduler is not None:
        from sparseseg.large import cluster

        cluster.check_cluster(workers, scheduler)
    outputs.check([*volumes, labels, init], [out, weights_out], [save_model_to])
    if save_model_to is not None:
        check_model_folder(save_model_to, outputs.overwrite)
    resolve_device(config.device)
    start_model = load_model(init) if init is not None else None
    if workers is None and scheduler is None and _voxels(volumes) > bounded.SLAB_THRESHOLD:
        report = _densify_slabs(
            volumes,
            io.open_source(volumes),
            labels,
            out,
            config,
            planes,
            weights_out,
            outputs,
            save_model_to,
            start_model,
            progress,
            partial,
        )
        if report is not None:
            return report
    image, annotation, how = read_pair(volumes, labels, config.unlabeled, planes)
    check_training(with_spacing(config, image), image.data.shape[1:], start_model)
    log.info("%s: %s", labels, how)
    with _stoppable(progress, partial) as stoppable:
        estimated = fit_estimated(image.data, annotation, with_spacing(config, image), stoppable, start_model)
    model, train_log = estimated.model, stoppable.told(estimated.train_log)
    _interrupted(train_log, partial)
    image = replace(
        image, spacing=model.config.spacing
    )  # outputs carry the voxel size trained with (file or --spacing)
    every = [out, weights_out, outputs.probabilities, outputs.preview, save_model_to]
    with io.outputs_together(every):
        written, segmentation, model = _write_densified(
            estimated,
            image,
            annotation,
            out,
            weights_out,
            outputs,
            save_model_to,
            (volumes, workers, scheduler, config.device),
        )
    return DensifyReport(how, model, train_log, segmentation, written)


def _write_densified(estimated, image, annotation, out, weights_out, outputs, save_model_to, where):
    """Segment and write every output of a whole-volume densify; ``where``: volumes, workers, scheduler, device."""
    volumes, workers, scheduler, device = where
    model = estimated.model
    if workers is None and scheduler is None:
        model, segmentation = segment_estimated(estimated, image.data, annotation, device)
        written = [io.write_volume(out, segmentation.labels, reference=image, overwrite=outputs.overwrite)]
    else:
        estimated.network = estimated.features = None  # the workers run the network and the forest on their blocks
        model, segmentation = _segment_on_cluster(
            model, volumes, image, annotation, out, outputs, workers, scheduler, device
        )
        written = [Path(out)] + ([Path(outputs.probabilities)] if outputs.probabilities is not None else [])
        outputs = replace(outputs, probabilities=None)  # written already
    if weights_out is not None:
        _, weights = loss_weights(annotation, model.classes, model.class_weights)
        written.append(io.write_volume(weights_out, weights, reference=image, overwrite=outputs.overwrite))
    written += outputs.write(image, segmentation, annotation.planes)
    if save_model_to is not None:
        written.append(save_model(save_model_to, model, outputs.overwrite))
    return written, segmentation, model


def _segment_on_cluster(
    model: Model,
    volumes,
    image: io.Volume,
    annotation: Annotation,
    out,
    outputs: Outputs,
    workers,
    scheduler,
    device: str,
) -> tuple[Model, Segmentation]:
    """Densify's dense inference over a dask cluster, to the labels (and probabilities) one process gives.

    The trained model goes to a temporary model folder beside ``out``, which each worker loads
    once; the workers write the network's probabilities of the blocks (the plan one process
    uses) into a temporary float32 Zarr array beside ``out`` and return those of the annotated
    voxels, on which the model is calibrated here; the blocks are then decided here, one at a
    time, into the outputs. Both temporary folders are removed at the end, whatever happens.
    """
    import shutil
    import tempfile

    import zarr

    from sparseseg.io.blocks import ArraySource, all_or_nothing
    from sparseseg.large import cluster
    from sparseseg.method.core import plan_of, write_decided

    start = time.perf_counter()
    final = io.locate(out).file
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".densify", dir=final.parent))
    shape = image.data.shape[1:]
    labels, probabilities = block_sinks(out, outputs, model, shape, image)
    try:
        with all_or_nothing(labels, probabilities):
            save_model(scratch / "model", model)
            plan = plan_of(model, ArraySource(image.data))
            block = tuple(s.stop - s.start for s in plan.blocks[0])
            store = scratch / "probabilities.zarr"
            zarr.create_array(
                store=str(store),
                shape=(len(model.classes),) + shape,
                chunks=(len(model.classes),) + block,
                dtype="float32",
                fill_value=0,
            )
            mask = (
                annotation.mask if model.config.calibrate and model.estimate is None else None
            )  # else: held-out offsets
            with cluster.client(workers, scheduler) as dask_client:
                annotated = cluster.probabilities_on_cluster(
                    scratch / "model",
                    io.open_source(volumes),
                    plan,
                    store,
                    dask_client=dask_client,
                    device=device,
                    mask=mask,
                )
            if annotated is not None:
                model = calibrate(model, [annotated], [annotation])
            array = zarr.open_array(str(store), mode="r")
            write = write_decided(model, labels, probabilities, ArraySource(image.data))
            for zyx in plan.blocks:
                write(zyx, np.asarray(array[(slice(None),) + zyx]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    segmentation = Segmentation(io.read_labels(out).data, None, time.perf_counter() - start, plan.windows)
    return model, segmentation


def _voxels(volumes: Sequence[PathLike]) -> int:
    """Voxels of the volume by its metadata; what the file's reader says on the way is said where it is read."""
    logger = logging.getLogger("sparseseg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        source = io.open_source(volumes)
    finally:
        logger.setLevel(level)
    source.close()
    return int(np.prod(source.shape[1:]))


def _stoppable(progress: Progress | None, partial: bool):
    """Training's progress callback: with ``partial``, Ctrl-C stops the training and the run goes on with what was
    trained (`sparseseg.method.training.ctrl_c_stops_training`); without, Ctrl-C quits at once."""
    return ctrl_c_stops_training(progress) if partial else contextlib.nullcontext(CtrlC(progress))


def _interrupted(train_log: TrainLog, partial: bool) -> None:
    if train_log.stopped_by == "interrupt":
        if not partial:
            raise KeyboardInterrupt
        log.warning("training interrupted after %d steps: segmenting with the model so far", train_log.iterations)


def _scan_for_slabs(source, labels: PathLike, config: Config, planes: list[str] | None, init: Model | None):
    """The labels opened and scanned for the slab path, and the config with the file's voxel size; None (with a
    warning) where the annotation holds no whole plane, so the volume must be read whole. Bad input raises first."""
    shape = tuple(source.shape[1:])
    sparse = open_labels(labels, shape)
    plane_dict = parse_planes(planes, shape) if planes else None
    scan = scan_labels(sparse, config.unlabeled, plane_dict, name=str(sparse.path))
    check_two_classes(scan.classes, str(sparse.path))
    config = with_spacing(config, source)
    check_training(config, shape, init)
    if not bounded.fits_slabs(config, scan, init):
        log.warning("%s: the annotation holds no whole plane to train across, so the volume is read whole", labels)
        return None
    return sparse, scan, config


def _densify_slabs(
    volumes, source, labels, out, config, planes, weights_out, outputs, save_model_to, start_model, progress, partial
):
    """`densify` of a large volume in bounded memory (`sparseseg.large.bounded`); None where it needs the volume
    whole."""
    scanned = _scan_for_slabs(source, labels, config, planes, start_model)
    if scanned is None:
        return None
    sparse, scan, config = scanned
    log.info("%s: %s; training on the slabs around the annotated planes", labels, scan.how)
    if config.holdout or config.forest:
        log.info("a volume this large is densified by the network alone: no held-out estimate, no forest blend (yet)")
    with _stoppable(progress, partial) as stoppable:
        model, train_log = bounded.fit_slabs(source, sparse, scan, config, stoppable, start_model)
    train_log = stoppable.told(train_log)
    _interrupted(train_log, partial)
    with io.outputs_together([out, weights_out, outputs.probabilities, outputs.preview, save_model_to]):
        model, written, windows, seconds = _write_slabs(
            model, source, sparse, scan, (volumes, out, weights_out, outputs, save_model_to)
        )
    return DensifyReport(scan.how, model, train_log, Segmentation(None, None, seconds, windows), written)


def _write_slabs(model, source, sparse, scan, paths):
    """Calibrate, segment and write every output of a slab densify; ``paths``: volumes, out, weights_out, outputs,
    save_model_to. The calibrated model, the files written, the windows and the seconds."""
    volumes, out, weights_out, outputs, save_model_to = paths
    shape = tuple(source.shape[1:])
    config = model.config
    sink, probabilities = block_sinks(out, outputs, model, shape, source, spacing=model.config.spacing)
    try:  # segment_source finishes the sinks, or aborts them
        model = bounded.calibrate_slabs(model, source, sparse, scan, config.device, sink.chunks)
    except BaseException:
        for made in (sink, probabilities):
            if made is not None:
                made.abort()
        raise
    windows, seconds = segment_source(model, source, sink, probabilities, device=config.device)
    written = [Path(out)]
    if weights_out is not None:
        with io.create_sink(
            weights_out, shape, np.float32, spacing=model.config.spacing, reference=source, overwrite=outputs.overwrite
        ) as weights:
            write_weights(sparse, scan, model.classes, model.class_weights, weights)
            written.append(weights.finish())
    written += [Path(outputs.probabilities)] if probabilities is not None else []
    if outputs.preview is not None:
        written.append(outputs.write_preview(volumes, out, scan.planes, model.config.spacing))
    if save_model_to is not None:
        written.append(save_model(save_model_to, model, outputs.overwrite))
    return model, written, windows, seconds


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


def _whole_pair(volumes: Sequence[PathLike], labels: PathLike, unlabeled: int) -> _TrainingPair:
    image, annotation, how = read_pair(volumes, labels, unlabeled)
    return _TrainingPair(
        image.path, image.data.shape[1:], image.data.shape[0], image.spacing, how, image.data, annotation
    )


def _slab_pair(
    volumes: Sequence[PathLike], labels: PathLike, config: Config, init: Model | None
) -> _TrainingPair | None:
    """A large volume's pair opened and its labels scanned (`sparseseg.large.slabs.scan_labels`); None where it needs
    the volume whole."""
    source = io.open_source(volumes)
    shape = tuple(source.shape[1:])
    scanned = _scan_for_slabs(source, labels, config, None, init)
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
    resolve_device(config.device)
    start_model = load_model(init) if init is not None else None
    opened: list[_TrainingPair] = []
    for volumes, labels in pairs:
        pair = None
        if _voxels(volumes) > bounded.SLAB_THRESHOLD:
            pair = _slab_pair(volumes, labels, config, start_model)
        if pair is None:
            pair = _whole_pair(volumes, labels, config.unlabeled)
        if opened and pair.channels != opened[0].channels:
            raise InputError(f"{pair.path}: {pair.channels} channels, the first volume has {opened[0].channels}")
        config = with_spacing(config, pair)
        check_training(config, pair.shape, start_model)
        log.info("%s: %s", labels, pair.how)
        opened.append(pair)
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
    with ctrl_c_stops_training(progress) as stoppable:  # a Ctrl-C in the calibration too still saves the model
        model, train_log = fit(images, annotations, config, stoppable, start_model, wholes)
        if model.config.calibrate:
            log.info("segmenting the %d training volume(s) to calibrate the class offsets", len(opened))
            model = calibrate(model, *_annotated_probabilities(model, opened))
    train_log = stoppable.told(train_log)
    if train_log.stopped_by == "interrupt":
        log.warning("training interrupted after %d steps: saving the model so far", train_log.iterations)
    return model, train_log, save_model(folder, model, overwrite)


def _annotated_probabilities(
    model: Model, opened: Sequence[_TrainingPair]
) -> tuple[list[np.ndarray], list[Annotation]]:
    """The network's probabilities of the annotated voxels of each training pair, and their annotations."""
    annotated, annotations = [], []
    for pair in opened:
        if pair.scan is None:
            annotated.append(network_probabilities(model, pair.image, model.config.device)[0][:, pair.annotation.mask])
            annotations.append(pair.annotation)
        else:
            probabilities, annotation = bounded.annotated_probabilities(
                model, pair.source, pair.labels, pair.scan, model.config.device
            )
            annotated.append(probabilities)
            annotations.append(annotation)
    return annotated, annotations


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
    *,
    outputs: Outputs = Outputs(),
    device: str = "auto",
    tta: bool | None = None,
    progress: BlockProgress | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    overlap: float | None = None,
) -> PredictReport:
    """Apply a saved model to a new volume (the fully automatic setting) and write the segmentation.

    The volume is read and segmented block by block and the outputs are written as the blocks
    come, so memory does not grow with the volume (only ``outputs.preview`` reads the volume
    and the result whole). ``device`` is where to predict ('auto': CUDA when available),
    whatever the model was trained on. ``overlap`` (None: the model's) is how much the windows
    overlap across the annotated planes (`sparseseg.method.core.with_overlap`): on a large volume a
    lower one is faster (0 runs a quarter of the windows of 0.75 along that axis); a model
    saved before sparseseg trained with the planes at any depth of a patch loses IoU by it.

    A Zarr or OME-Zarr output interrupted by Ctrl-C is kept, unfinished, in its hidden partial
    folder (`sparseseg.errors.Interrupted` says where); the same call with ``resume`` takes it
    up and writes only the blocks it does not hold whole. It is taken up only by a run of the
    same model folder (its files' hash), volumes (paths, sizes, times), ``tta`` and sparseseg
    version, and refused for other formats. ``outputs.overwrite`` still says whether the
    finished output may replace an earlier one.
    """
    if resume:
        for path in (out, outputs.probabilities):
            if path is not None:
                io.check_resumable(path)
    if workers is not None or scheduler is not None:
        from sparseseg.large import cluster

        cluster.check_cluster(workers, scheduler)
    outputs.check([folder, *volumes], [out])
    resolve_device(device)
    model = with_overlap(load_model(folder), overlap)
    source = io.open_source(volumes)
    if source.shape[0] != model.in_channels:
        raise InputError(
            f"{source.path}: the model {folder} takes {model.in_channels} channel(s), got {source.shape[0]}"
        )
    key = run_key(folder, volumes, model.config.tta if tta is None else tta)
    shared = workers is not None or scheduler is not None
    with io.outputs_together([out, outputs.probabilities, outputs.preview]):
        labels, probabilities = block_sinks(
            out, outputs, model, source.shape[1:], source, key=key, resume=resume, shared=shared
        )
        if not shared:
            windows, seconds = segment_source(
                model, source, labels, probabilities, device=device, tta=tta, progress=progress
            )
        else:
            windows, seconds = _on_cluster(
                model, folder, source, labels, probabilities, workers, scheduler, device, tta, progress
            )
        written = [Path(out)] + ([Path(outputs.probabilities)] if probabilities is not None else [])
        if outputs.preview is not None:
            written.append(outputs.write_preview(volumes, out))
    return PredictReport(model, windows, seconds, written)


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
    key: dict | None = None,
    resume: bool = False,
    shared: bool = False,
):
    """The labels sink (and the probabilities sink, chunked alike) of a block-by-block segmentation of a (Z, Y, X)
    ``shape``.

    A chunked output is chunked in whole steps of the model's windows (`sparseseg.method.core.output_chunks`).

    ``spacing``, else ``reference`` (the input), gives the voxel size; ``key`` and ``resume`` go to `io.create_sink`;
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
            key=key,
            resume=resume,
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
                key=key,
                resume=resume,
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


def _on_cluster(model, folder, source, labels, probabilities, workers, scheduler, device, tta, progress):
    """Segment on a dask cluster (`sparseseg.large.cluster`) with ``model``, saved in ``folder``; the windows and the
    seconds."""
    from sparseseg.large import cluster

    start = time.perf_counter()
    try:
        dask_client = cluster.client(workers, scheduler)
    except BaseException:
        for sink in (labels, probabilities):
            if sink is not None:
                sink.release()
        raise
    with dask_client:
        windows = cluster.segment_on_cluster(
            model,
            folder,
            source,
            labels,
            probabilities,
            dask_client=dask_client,
            device=device,
            tta=tta,
            progress=progress,
        )
    return windows, time.perf_counter() - start


#: The commands that look at volumes and segmentations, served here too (see `sparseseg.commands.review`).
suggest, preview, evaluate = review.suggest, review.preview, review.evaluate
