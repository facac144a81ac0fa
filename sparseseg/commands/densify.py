"""`densify`, from paths to written files: read, check, train with held-out planes, segment and write.

A volume larger than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels is read only in the slabs around its annotated
planes and segmented block by block (`sparseseg.large.bounded`), so that memory does not grow with the volume. With
``workers`` or ``scheduler`` the dense inference goes over a dask cluster. The outputs appear together or not at all
(`sparseseg.io.outputs_together`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sparseseg import io
from sparseseg.commands.outputs import (
    Outputs,
    PathLike,
    block_sinks,
    log,
    read_pair,
    stop_if_interrupted,
    stopping_on_ctrl_c,
    with_spacing,
)
from sparseseg.commands.review import open_labels
from sparseseg.config import Config
from sparseseg.large import bounded, cluster
from sparseseg.large.cluster import Cluster
from sparseseg.large.slab_volume import open_slabs
from sparseseg.large.slabs import scan_labels, write_weights
from sparseseg.method.annotation import Annotation, check_two_classes, parse_planes
from sparseseg.method.core import Model, Segmentation, calibrate, resolve_device, segment_source
from sparseseg.method.ensemble import fit_estimated, fit_volume
from sparseseg.method.fitting import check_training, loss_weights
from sparseseg.method.modelfolder import check_model_folder, load_model, save_model
from sparseseg.method.progress import Progress, as_progress, begin
from sparseseg.method.segmenting import segment_estimated
from sparseseg.method.training import TrainLog


@dataclass(frozen=True)
class DensifyOptions:
    """What `densify` does besides the method's `Config`: which planes to read, what else to write, where to start
    and where the dense inference runs.

    ``planes``: the annotated planes as ``["z=12,40", "y=64"]`` (None: found in the labels); ``weights_out``: the
    per-voxel loss weights; ``save_model_to``: a model folder; ``init``: a model folder to train on from; ``partial``:
    Ctrl-C during training segments with the model so far (else nothing is written and KeyboardInterrupt is raised).
    """

    planes: list[str] | None = None
    weights_out: PathLike | None = None
    outputs: Outputs = Outputs()
    save_model_to: PathLike | None = None
    init: PathLike | None = None
    partial: bool = True
    cluster: Cluster = Cluster()


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


@dataclass(frozen=True)
class _Job:
    """One `densify` call: its paths, config, options, progress and the model it starts from."""

    volumes: Sequence[PathLike]
    labels: PathLike
    out: PathLike
    config: Config
    options: DensifyOptions
    progress: Progress | None
    start_model: Model | None
    device: torch.device  # decided once, from config.device

    def every_output(self) -> list:
        o = self.options
        return [self.out, o.weights_out, o.outputs.probabilities, o.outputs.preview, o.save_model_to]


def densify(
    volumes: Sequence[PathLike],
    labels: PathLike,
    out: PathLike,
    config: Config = Config(),
    options: DensifyOptions = DensifyOptions(),
    progress: Progress | None = None,
) -> DensifyReport:
    """Densify from files: read, check, train, segment and write.

    A volume of more than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels whose annotation holds whole planes is
    trained on the slabs around them and segmented block by block into the outputs (the report's segmentation then
    holds no arrays, only its seconds and windows); only ``options.outputs.preview`` reads it whole. The input is
    opened first (what it is, not its data), then every input and output path is checked, before training starts.
    Ctrl-C during training ends it early and the segmentation is made with the model trained so far (the report says
    ``interrupted``); see `DensifyOptions.partial`.

    With ``options.cluster`` the training stays here and the dense inference after it goes over a dask cluster (see
    `_segment_on_cluster`): the same labels, written block by block; the report's segmentation then holds no
    probabilities (and, for a volume read whole, the labels read back).
    """
    options.cluster.check()
    with io.open_source(volumes) as source:  # opened once: read whole, or by slabs and blocks
        inputs = [*source.locations, labels, options.init]
        options.outputs.check(inputs, [out, options.weights_out], [options.save_model_to])
        if options.save_model_to is not None:
            check_model_folder(options.save_model_to, options.outputs.overwrite)
        device = resolve_device(config.device)  # 'auto' decided once; the model's config records where it trained
        config = replace(config, device=device.type)
        start_model = load_model(options.init) if options.init is not None else None
        job = _Job(volumes, labels, out, config, options, progress, start_model, device)
        if math.prod(source.shape[1:]) > bounded.SLAB_THRESHOLD:
            report = _densify_slabs(job, source)
            if report is not None:
                return report
        return _densify_whole(job, source)


def _densify_whole(job: _Job, source) -> DensifyReport:
    """`densify` of a volume read whole from ``source``: `fit_estimated`, then `_write_densified`."""
    config = job.config
    image, annotation, how = read_pair(source, job.labels, config.unlabeled, job.options.planes, config.spacing)
    config = replace(config, spacing=image.spacing)
    check_training(config, image.data.shape[1:], job.start_model)
    log.info("%s: %s", job.labels, how)
    with stopping_on_ctrl_c(job.progress, job.options.partial) as stoppable:
        estimated = fit_estimated(image.data, annotation, config, stoppable, job.start_model)
    model, train_log = estimated.model, stoppable.told(estimated.train_log)
    stop_if_interrupted(train_log, job.options.partial)
    image = replace(image, spacing=model.config.spacing)  # outputs carry the voxel size trained with
    with io.outputs_together(job.every_output()):
        written, segmentation, model = _write_densified(estimated, (source, image), annotation, job)
    return DensifyReport(how, model, train_log, segmentation, written)


def _write_densified(estimated, read, annotation, job: _Job):
    """Segment and write every output of a whole-volume densify; ``read``: the volume's Source and its image."""
    (source, image), model, options = read, estimated.model, job.options
    outputs = options.outputs
    if not options.cluster.used:
        model, segmentation = segment_estimated(estimated, job.device)
        written = [
            io.write_volume(job.out, segmentation.labels, reference=image.reference, overwrite=outputs.overwrite)
        ]
    else:
        estimated.network = estimated.features = None  # the workers run the network and the forest on their blocks
        on = annotation if model.config.calibrate and model.estimate is None else None  # else: held-out offsets
        model, windows, seconds = _segment_on_cluster(model, source, on, job)
        segmentation = Segmentation(io.read_labels(job.out).data, None, seconds, windows)
        written = [Path(job.out)] + ([Path(outputs.probabilities)] if outputs.probabilities is not None else [])
        outputs = replace(outputs, probabilities=None)  # written already
    if options.weights_out is not None:
        _, weights = loss_weights(annotation, model.classes, model.class_weights)
        written.append(
            io.write_volume(options.weights_out, weights, reference=image.reference, overwrite=outputs.overwrite)
        )
    written += outputs.write(image, segmentation, annotation.planes)
    if options.save_model_to is not None:
        written.append(save_model(options.save_model_to, model, outputs.overwrite))
    return written, segmentation, model


def _segment_on_cluster(model: Model, source, on: Annotation | None, job: _Job):
    """Densify's dense inference over a dask cluster, to the labels (and probabilities) one process gives: the
    calibrated model, the windows and the seconds.

    The trained model goes to a temporary model folder beside ``out``, which each worker loads
    once; the workers write the network's probabilities of the blocks (the plan one process
    uses) into a temporary float32 Zarr array beside ``out`` and return those of the annotated voxels of ``on`` (None:
    none), on which the model is calibrated here; the blocks are then decided here, one at a
    time, into the outputs. Both temporary folders are removed at the end, whatever happens.
    """
    import shutil
    import tempfile

    from sparseseg.io.blocks import all_or_nothing

    start = time.perf_counter()
    final = io.locate(job.out).file
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".densify", dir=final.parent))
    shape = tuple(source.shape[1:])
    sinks = block_sinks(job.out, job.options.outputs, model, shape, source, spacing=model.config.spacing)
    try:
        with all_or_nothing(*sinks):
            model, plan = _decide_on_cluster(model, source, on, job, (scratch, sinks))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return model, plan.windows, time.perf_counter() - start


def _decide_on_cluster(model, source, on: Annotation | None, job: _Job, where):
    """The cluster's probabilities into a Zarr array in ``where``'s scratch folder, the calibration on the annotated
    voxels of ``on``, and the decided blocks into ``where``'s sinks; the calibrated model and the plan."""
    import zarr

    from sparseseg.method.core import plan_of, write_decided

    scratch, (labels, probabilities) = where
    save_model(scratch / "model", model)
    plan = plan_of(model, source)
    block = tuple(s.stop - s.start for s in plan.blocks[0])
    store = scratch / "probabilities.zarr"
    k = len(model.classes)
    shape = (k,) + tuple(source.shape[1:])
    zarr.create_array(store=str(store), shape=shape, chunks=(k,) + block, dtype="float32", fill_value=0)
    mask = None if on is None else on.mask
    with job.options.cluster.client() as dask_client:
        annotated = cluster.probabilities_on_cluster(
            scratch / "model", source, plan, store, dask_client=dask_client, device=job.device.type, mask=mask
        )
    if annotated is not None:
        model = calibrate(model, [annotated], [on])
    array = zarr.open_array(str(store), mode="r")
    write = write_decided(model, labels, probabilities, source)
    for zyx in plan.blocks:
        write(zyx, np.asarray(array[(slice(None),) + zyx]))
    return model, plan


def scan_for_slabs(source, labels: PathLike, config: Config, planes: list[str] | None, init: Model | None):
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


def _densify_slabs(job: _Job, source) -> DensifyReport | None:
    """`densify` of a large volume in bounded memory (`sparseseg.large.bounded`); None where it needs the volume
    whole."""
    scanned = scan_for_slabs(source, job.labels, job.config, job.options.planes, job.start_model)
    if scanned is None:
        return None
    sparse, scan, config = scanned
    log.info("%s: %s; training on the slabs around the annotated planes", job.labels, scan.how)
    volume = open_slabs(source, sparse, scan, config, job.start_model)
    with stopping_on_ctrl_c(job.progress, job.options.partial) as stoppable:
        estimated = fit_volume(volume, config, stoppable, job.start_model)
    model, train_log = estimated.model, stoppable.told(estimated.train_log)
    stop_if_interrupted(train_log, job.options.partial)
    with io.outputs_together(job.every_output()):
        model, written, windows, seconds = _write_slabs(model, source, (sparse, scan), job)
    return DensifyReport(scan.how, model, train_log, Segmentation(None, None, seconds, windows), written)


def _segment_slabs(model, source, scanned, job: _Job):
    """Calibrate where no estimate chose the offsets, and segment the volume block by block into the outputs, here or
    on the cluster; ``scanned``: the labels and their scan. The calibrated model, the windows and the seconds."""
    sparse, scan = scanned
    begin(as_progress(job.progress), "segmenting")
    calibrates = model.estimate is None  # else: the offsets chosen on the held-out planes
    if job.options.cluster.used:
        if calibrates:
            model = bounded.calibrate_slabs(model, source, sparse, scan, job.device)
        return _segment_on_cluster(model, source, None, job)
    shape = tuple(source.shape[1:])
    sink, probabilities = block_sinks(job.out, job.options.outputs, model, shape, source, spacing=model.config.spacing)
    try:  # segment_source finishes the sinks, or aborts them
        if calibrates:
            model = bounded.calibrate_slabs(model, source, sparse, scan, job.device, sink.chunks)
    except BaseException:
        for made in (sink, probabilities):
            if made is not None:
                made.abort()
        raise
    windows, seconds = segment_source(model, source, sink, probabilities, device=job.device)
    return model, windows, seconds


def _write_slabs(model, source, scanned, job: _Job):
    """Segment and write every output of a slab densify (`_segment_slabs`); ``scanned``: the labels and their scan.
    The calibrated model, the files written, the windows and the seconds."""
    sparse, scan = scanned
    options, outputs = job.options, job.options.outputs
    shape = tuple(source.shape[1:])
    model, windows, seconds = _segment_slabs(model, source, scanned, job)
    written = [Path(job.out)]
    if options.weights_out is not None:
        with io.create_sink(
            options.weights_out,
            shape,
            np.float32,
            spacing=model.config.spacing,
            reference=source,
            overwrite=outputs.overwrite,
        ) as weights:
            write_weights(sparse, scan, model.classes, model.class_weights, weights)
            written.append(weights.finish())
    written += [Path(outputs.probabilities)] if outputs.probabilities is not None else []
    if outputs.preview is not None:
        written.append(outputs.write_preview(job.volumes, job.out, scan.planes, model.config.spacing))
    if options.save_model_to is not None:
        written.append(save_model(options.save_model_to, model, outputs.overwrite))
    return model, written, windows, seconds
