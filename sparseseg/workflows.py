"""The file commands: densify, train, predict, suggest, preview and eval, from paths to written files.

Each reads its inputs through `sparseseg.io`, calls `sparseseg.core` and writes its outputs.
Every path and option that can be checked without training is checked first (`check_paths`,
`sparseseg.paths`): bad input raises `InputError` before any work, an input is never an
output, and outputs are written only at the end, each atomically.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sparseseg import UNLABELED, __version__, io
from sparseseg.config import Config
from sparseseg.core import (
    Model, Segmentation, calibrate, check_training, fit, labels_dtype, loss_weights, network_probabilities, resolve_device,
    segment, segment_calibrated, segment_source,
)
from sparseseg.errors import InputError
from sparseseg.labels import Annotation, annotated_mask, check_class_ids, parse_planes, read_annotation
from sparseseg.metrics import Scores, score
from sparseseg.modelfolder import check_model_folder, load_model, model_digest, save_model
from sparseseg.paths import check_distinct
from sparseseg.streaming import BlockProgress
from sparseseg.train import Progress, TrainLog

log = logging.getLogger("sparseseg")

PathLike = str | os.PathLike


@dataclass
class Outputs:
    """Where the optional extra outputs of densify and predict go, and whether earlier outputs may be replaced."""

    probabilities: PathLike | None = None
    preview: PathLike | None = None
    overwrite: bool = False

    def check(self, inputs: Sequence[PathLike | None], volumes: Sequence[PathLike | None], folders: Sequence[PathLike | None] = ()) -> None:
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
            from sparseseg.preview import render_preview

            picture = render_preview(image.data, segmentation.labels, planes=planes, spacing=image.spacing)
            written.append(io.write_png(self.preview, picture, overwrite=self.overwrite))
        return written


@dataclass
class DensifyReport:
    """What `densify` did: how the annotation was read, the model, the training log, the files written."""

    how: str
    model: Model
    train_log: TrainLog
    segmentation: Segmentation
    written: list[Path]

    @property
    def interrupted(self) -> bool:
        return self.train_log.stopped_by == "interrupt"


def with_spacing(config: Config, image: io.Volume) -> Config:
    """``config`` with the file's voxel size where the config gives none."""
    if config.spacing is None and image.spacing is not None:
        return replace(config, spacing=image.spacing)
    return config


def same_shape(volume: io.Volume, shape: tuple[int, ...], what: str = "the volume's") -> None:
    """Raise `InputError` unless ``volume`` (labels, a mask, ...) has ``shape``."""
    if volume.data.shape[-3:] != tuple(shape) or volume.data.ndim < 3:
        raise InputError(f"{volume.path}: shape {volume.data.shape} differs from {what} {tuple(shape)}")


def read_pair(volumes: Sequence[PathLike], labels: PathLike, unlabeled: int,
              planes: list[str] | None = None) -> tuple[io.Volume, Annotation, str]:
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

    Every input and output path is checked before training starts. Ctrl-C during training
    ends it early and the segmentation is made with the model trained so far (the report
    says ``interrupted``); with ``partial=False`` nothing is written then and
    KeyboardInterrupt is raised.

    With ``workers`` (a local dask cluster) or ``scheduler`` (an existing one's address) the
    training stays here and the dense inference after it goes over the cluster (see
    `_segment_on_cluster`): the same labels, written block by block; the report's
    segmentation then holds the labels read back and no probabilities.
    """
    if workers is not None or scheduler is not None:
        from sparseseg import cluster

        cluster.need_dask()
    outputs.check([*volumes, labels, init], [out, weights_out], [save_model_to])
    if save_model_to is not None:
        check_model_folder(save_model_to, outputs.overwrite)
    resolve_device(config.device)
    start_model = load_model(init) if init is not None else None
    image, annotation, how = read_pair(volumes, labels, config.unlabeled, planes)
    check_training(with_spacing(config, image), image.data.shape[1:], start_model)
    log.info("%s: %s", labels, how)
    model, train_log = fit([image.data], [annotation], with_spacing(config, image), progress, start_model)
    if train_log.stopped_by == "interrupt":
        if not partial:
            raise KeyboardInterrupt
        log.warning("training interrupted after %d steps: segmenting with the model so far", train_log.iterations)
    if workers is None and scheduler is None:
        model, segmentation = segment_calibrated(model, image.data, annotation, config.device)
        image = replace(image, spacing=model.config.spacing)  # outputs carry the voxel size trained with (file or --spacing)
        written = [io.write_volume(out, segmentation.labels, reference=image, overwrite=outputs.overwrite)]
    else:
        image = replace(image, spacing=model.config.spacing)
        model, segmentation = _segment_on_cluster(model, volumes, image, annotation, out, outputs, workers, scheduler,
                                                  config.device)
        written = [Path(out)] + ([Path(outputs.probabilities)] if outputs.probabilities is not None else [])
        outputs = replace(outputs, probabilities=None)  # written already
    if weights_out is not None:
        _, weights = loss_weights(annotation, model.classes, model.class_weights)
        written.append(io.write_volume(weights_out, weights, reference=image, overwrite=outputs.overwrite))
    written += outputs.write(image, segmentation, annotation.planes)
    if save_model_to is not None:
        written.append(save_model(save_model_to, model, outputs.overwrite))
    return DensifyReport(how, model, train_log, segmentation, written)


def _segment_on_cluster(model: Model, volumes, image: io.Volume, annotation: Annotation, out, outputs: Outputs, workers,
                        scheduler, device: str) -> tuple[Model, Segmentation]:
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

    from sparseseg import cluster
    from sparseseg.blocks import ArraySource, all_or_nothing
    from sparseseg.core import write_decided
    from sparseseg.streaming import plan_volume

    start = time.perf_counter()
    final = io.locate(out).file
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".densify", dir=final.parent))
    shape = image.data.shape[1:]
    labels, probabilities = block_sinks(out, outputs, model, shape, image)
    try:
        with all_or_nothing(labels, probabilities):
            save_model(scratch / "model", model)
            plan = plan_volume(model.network, ArraySource(image.data), model.windows, model.config.patch)
            block = tuple(s.stop - s.start for s in plan.blocks[0])
            store = scratch / "probabilities.zarr"
            zarr.create_array(store=str(store), shape=(len(model.classes),) + shape, chunks=(len(model.classes),) + block,
                              dtype="float32", fill_value=0)
            mask = annotation.mask if model.config.calibrate else None
            with cluster.client(workers, scheduler) as dask_client:
                annotated = cluster.probabilities_on_cluster(scratch / "model", io.open_source(volumes), plan, store,
                                                             dask_client=dask_client, device=device, mask=mask)
            if annotated is not None:
                model = calibrate(model, [annotated], [annotation])
            array, write = zarr.open_array(str(store), mode="r"), write_decided(model, labels, probabilities)
            for zyx in plan.blocks:
                write(zyx, np.asarray(array[(slice(None),) + zyx]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    segmentation = Segmentation(io.read_labels(out).data, None, time.perf_counter() - start, plan.windows)
    return model, segmentation


def train_files(
    pairs: Sequence[tuple[Sequence[PathLike], PathLike]],
    folder: PathLike,
    config: Config = Config(),
    *,
    overwrite: bool = False,
    init: PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[Model, TrainLog, Path]:
    """Train one model on several sparsely annotated volumes, given as (volumes, labels) pairs, and save it as a model folder."""
    if not pairs:
        raise InputError("give at least one pair of volume(s) and labels", param="pairs", value="none")
    check_distinct([p for volumes, labels in pairs for p in (*volumes, labels)] + [init], [], [folder])
    check_model_folder(folder, overwrite)
    resolve_device(config.device)
    start_model = load_model(init) if init is not None else None
    images, annotations = [], []
    for volumes, labels in pairs:
        image, annotation, how = read_pair(volumes, labels, config.unlabeled)
        if images and image.data.shape[0] != images[0].shape[0]:
            raise InputError(f"{image.path}: {image.data.shape[0]} channels, the first volume has {images[0].shape[0]}")
        config = with_spacing(config, image)
        check_training(config, image.data.shape[1:], start_model)
        log.info("%s: %s", labels, how)
        images.append(image.data)
        annotations.append(annotation)
    model, train_log = fit(images, annotations, config, progress, start_model)
    if train_log.stopped_by == "interrupt":
        log.warning("training interrupted after %d steps: saving the model so far", train_log.iterations)
    if model.config.calibrate:
        log.info("segmenting the %d training volume(s) to calibrate the class offsets", len(images))
        annotated = [network_probabilities(model, image, model.config.device)[0][:, a.mask] for image, a in zip(images, annotations)]
        model = calibrate(model, annotated, annotations)
    return model, train_log, save_model(folder, model, overwrite)


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
) -> PredictReport:
    """Apply a saved model to a new volume (the fully automatic setting) and write the segmentation.

    The volume is read and segmented block by block and the outputs are written as the blocks
    come, so memory does not grow with the volume (only ``outputs.preview`` reads the volume
    and the result whole). ``device`` is where to predict ('auto': CUDA when available),
    whatever the model was trained on.

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
    outputs.check([folder, *volumes], [out])
    resolve_device(device)
    model = load_model(folder)
    source = io.open_source(volumes)
    if source.shape[0] != model.in_channels:
        raise InputError(f"{source.path}: the model {folder} takes {model.in_channels} channel(s), got {source.shape[0]}")
    key = run_key(folder, volumes, model.config.tta if tta is None else tta)
    shared = workers is not None or scheduler is not None
    labels, probabilities = block_sinks(out, outputs, model, source.shape[1:], source, key=key, resume=resume,
                                        shared=shared)
    if not shared:
        windows, seconds = segment_source(model, source, labels, probabilities, device=device, tta=tta, progress=progress)
    else:
        windows, seconds = _on_cluster(folder, source, labels, probabilities, workers, scheduler, device, tta, progress)
    written = [Path(out)] + ([Path(outputs.probabilities)] if probabilities is not None else [])
    if outputs.preview is not None:
        from sparseseg.preview import render_preview

        image = io.read_image(volumes)
        picture = render_preview(image.data, io.read_labels(out).data, spacing=image.spacing)
        written.append(io.write_png(outputs.preview, picture, overwrite=outputs.overwrite))
    return PredictReport(model, windows, seconds, written)


def run_key(folder: PathLike, volumes: Sequence[PathLike], tta: bool) -> dict:
    """The fingerprint of a block-by-block segmentation: what an output an interrupted run left must match to be resumed."""
    return {"sparseseg": __version__, "model": model_digest(folder), "volumes": [io.stamp(v) for v in volumes],
            "tta": bool(tta)}


def block_sinks(out: PathLike, outputs: Outputs, model: Model, shape, reference, *, key: dict | None = None,
                resume: bool = False, shared: bool = False):
    """The labels sink (and the probabilities sink, chunked alike) of a block-by-block segmentation of a (Z, Y, X) ``shape``.

    ``reference`` (the input) gives the voxel size; ``key`` and ``resume`` go to `io.create_sink`;
    ``shared``: several workers write them (a chunked output is needed). Where one cannot be
    made, those made are let go (a resumed one left as it was) before the error goes on.
    """
    made = []
    try:
        labels = io.create_sink(out, shape, labels_dtype(model.classes), reference=reference, overwrite=outputs.overwrite,
                                key=key, resume=resume)
        made.append(labels)
        probabilities = None
        if outputs.probabilities is not None:
            probabilities = io.create_sink(outputs.probabilities, (len(model.classes),) + shape, np.uint8,
                                           reference=reference, overwrite=outputs.overwrite, chunks=labels.chunks,
                                           key=key, resume=resume)
            made.append(probabilities)
        if shared:
            from sparseseg import cluster

            cluster.check_shared(labels, probabilities)  # before a cluster is started
    except BaseException:
        for sink in made:
            sink.release()
        raise
    return labels, probabilities


def _on_cluster(folder, source, labels, probabilities, workers, scheduler, device, tta, progress):
    """Segment on a dask cluster (`sparseseg.cluster`) with the model in ``folder``; the windows and the seconds."""
    from sparseseg import cluster

    start = time.perf_counter()
    try:
        dask_client = cluster.client(workers, scheduler)
    except BaseException:
        for sink in (labels, probabilities):
            if sink is not None:
                sink.release()
        raise
    with dask_client:
        windows = cluster.segment_on_cluster(folder, source, labels, probabilities, dask_client=dask_client,
                                             device=device, tta=tta, progress=progress)
    return windows, time.perf_counter() - start


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
    """Rank the planes not yet annotated by the model's uncertainty (mean predictive entropy)."""
    from sparseseg.suggest import plane_uncertainty, rank_planes

    if model is None and probabilities is None:
        raise InputError("give a model folder (to predict) or probabilities (from densify's probabilities output)")
    if top < 1:
        raise InputError("must be at least 1", param="top", value=top)
    resolve_device(device)
    image = io.read_image(volumes)
    shape = image.data.shape[1:]
    if probabilities is not None:
        probs = read_probabilities(probabilities, shape)
    else:
        probs = segment(load_model(model), image.data, device).probabilities
    annotated = None
    if slices is not None:
        sparse = io.read_labels(slices)
        same_shape(sparse, shape)
        _, annotated, _ = annotated_mask(sparse.data, unlabeled, name=str(sparse.path))
    return rank_planes(plane_uncertainty(probs), annotated, top)


def read_probabilities(path: PathLike, shape: tuple[int, int, int]) -> np.ndarray:
    """Class probabilities (K, Z, Y, X) float32 in 0..1 from a file (uint8 0..255 or float 0..1)."""
    volume = io.read_volume(path)
    if volume.data.ndim != 4 or volume.data.shape[1:] != shape:
        raise InputError(f"{volume.path}: expected (classes, {', '.join(map(str, shape))}) probabilities, got {volume.data.shape}")
    if volume.data.shape[0] < 2:
        raise InputError(f"{volume.path}: expected one channel per class (at least 2), got {volume.data.shape[0]}")
    scale = 255.0 if volume.data.dtype == np.uint8 else 1.0
    probs = volume.data.astype(np.float32) / scale
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise InputError(f"{volume.path}: probabilities must be finite (no NaN or Inf) and lie in 0..1 (or uint8 0..255)")
    return probs


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
    from sparseseg.preview import render_preview

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
        picture = render_preview(image.data, data, planes=plane_dict, centre=centre, spacing=spacing or image.spacing,
                                 unlabeled=unlabeled)
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
