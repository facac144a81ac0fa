"""`densify`, from paths to written files: read, check, train with held-out planes, segment and write.

A volume larger than `sparseseg.large.bounded.SLAB_THRESHOLD` voxels is read only in the slabs around its annotated
planes and segmented block by block (`sparseseg.large.bounded`), so that memory does not grow with the volume. With
``workers`` or ``scheduler`` the dense inference goes over a dask cluster. The outputs appear together or not at all
(`sparseseg.io.outputs_together`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sparseseg import io
from sparseseg.commands.outputs import (
    Outputs,
    PathLike,
    block_sinks,
    log,
    read_pair,
    stop_if_interrupted,
    stopping_on_ctrl_c,
    voxel_count,
    with_spacing,
)
from sparseseg.commands.review import open_labels
from sparseseg.config import Config
from sparseseg.large import bounded
from sparseseg.large.slabs import scan_labels, write_weights
from sparseseg.method.annotation import Annotation, check_two_classes, parse_planes
from sparseseg.method.core import Model, Segmentation, calibrate, resolve_device, segment_source
from sparseseg.method.ensemble import fit_estimated
from sparseseg.method.fitting import check_training, loss_weights
from sparseseg.method.modelfolder import check_model_folder, load_model, save_model
from sparseseg.method.progress import Progress
from sparseseg.method.segmenting import segment_estimated
from sparseseg.method.training import TrainLog


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
    if workers is None and scheduler is None and voxel_count(volumes) > bounded.SLAB_THRESHOLD:
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
    with stopping_on_ctrl_c(progress, partial) as stoppable:
        estimated = fit_estimated(image.data, annotation, with_spacing(config, image), stoppable, start_model)
    model, train_log = estimated.model, stoppable.told(estimated.train_log)
    stop_if_interrupted(train_log, partial)
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


def _densify_slabs(
    volumes, source, labels, out, config, planes, weights_out, outputs, save_model_to, start_model, progress, partial
):
    """`densify` of a large volume in bounded memory (`sparseseg.large.bounded`); None where it needs the volume
    whole."""
    scanned = scan_for_slabs(source, labels, config, planes, start_model)
    if scanned is None:
        return None
    sparse, scan, config = scanned
    log.info("%s: %s; training on the slabs around the annotated planes", labels, scan.how)
    if config.holdout or config.forest:
        log.info("a volume this large is densified by the network alone: no held-out estimate, no forest blend (yet)")
    with stopping_on_ctrl_c(progress, partial) as stoppable:
        model, train_log = bounded.fit_slabs(source, sparse, scan, config, stoppable, start_model)
    train_log = stoppable.told(train_log)
    stop_if_interrupted(train_log, partial)
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
