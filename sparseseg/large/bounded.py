"""densify, train and suggest on a volume of any size, in memory that does not grow with the volume.

Training reads only the slabs around the annotated planes (`sparseseg.large.slabs.read_stack`) and
a sample of whole planes for the normalisation statistics, the sample the block inference
takes them from (`sparseseg.method.preprocess.sample_planes`). Calibration runs, block by block, only
the sliding windows over annotated voxels: the very windows the segmentation runs there, so
the offsets are those the whole volume's probabilities give. The segmentation then goes block
by block into sinks (`sparseseg.method.core.segment_source`), as `predict` does. On a volume that is
one block this is the whole-array path, voxel for voxel (tests/large/test_slabs.py); `suggest`
accumulates the plane uncertainty block by block (`sparseseg.method.uncertainty.PlaneEntropy`).
"""

from __future__ import annotations

import numpy as np

from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.blocks import Source
from sparseseg.large.slabs import LabelScan, read_stack, z_blocks
from sparseseg.method import augment
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Device, Model, calibrate, forest_part, mixed, resolve_device, run_model
from sparseseg.method.decision import apply_offsets
from sparseseg.method.fitting import plan_training
from sparseseg.method.planning import AXES, patch_shapes, size_multiple, thin_depths
from sparseseg.method.preprocess import source_stats
from sparseseg.method.streaming import Wanted
from sparseseg.method.training import WholeVolume, crop_shapes
from sparseseg.method.uncertainty import PlaneEntropy

#: Volumes of more voxels than this are densified from slabs; smaller ones are read whole, as they always were.
SLAB_THRESHOLD = 2**23


def training_crops(
    config: Config, scan: LabelScan, init: Model | None = None, shape: tuple[int, int, int] | None = None
) -> dict:
    """The crops `fit` cuts per annotated axis for the volume of ``scan`` (key None: cubes around any annotated voxel).

    The patch is planned for ``shape`` (default: the scanned volume's); `fit` on several volumes
    plans it for the smallest extent along each axis of them all.
    """
    config, pools, patch, _ = plan_training(
        config, scan.shape if shape is None else shape, init, resolve_device(config.device)
    )
    axes = [a for a in AXES if scan.planes.get(a)]
    thin = thin_depths(config.thin, config.spacing, size_multiple(pools), patch) if config.thin else None
    return crop_shapes(patch_shapes(patch, thin, axes), augment.AugmentParams() if config.augment else None)


def fits_slabs(config: Config, scan: LabelScan, init: Model | None = None) -> bool:
    """Whether training on the slabs around the annotated planes is training on the volume.

    It is when the training crops are thin across whole annotated planes; crops around
    annotated voxels that lie on no whole plane (scribbles, partly annotated planes) need the volume.
    """
    return None not in training_crops(config, scan, init)


def read_slabs(
    image: Source,
    labels: Source,
    scan: LabelScan,
    config: Config,
    init: Model | None = None,
    shape: tuple[int, int, int] | None = None,
) -> tuple[list[np.ndarray], list[Annotation], WholeVolume]:
    """The stacks of slabs `fit` trains on for the volume of ``scan``, one per annotated axis, and its `WholeVolume`.

    Parameters
    ----------
    image, labels : Source
        The (C, Z, Y, X) volume and its (1, Z, Y, X) sparse labels.
    scan : LabelScan
        What `sparseseg.large.slabs.scan_labels` found in ``labels``; needs `fits_slabs`.
    config, init
        As `fit` gets them.
    shape : (Z, Y, X), optional
        What the training patch is planned for (see `training_crops`; default: the volume's).

    Returns
    -------
    images : list of ndarray, (C, ...) float32
        The raw stacks (`sparseseg.large.slabs.read_stack`).
    annotations : list of Annotation
        Their annotations.
    whole : WholeVolume
        The volume's shape, the normalisation statistics of the block inference and the
        annotated voxels' class counts, for `fit`.
    """
    crops = training_crops(config, scan, init, shape)
    if None in crops:
        raise ValueError("the annotation has no whole plane to train across: train on the whole volume")
    stats = source_stats(image)
    images, annotations = [], []
    for axis, crop in crops.items():
        stack, annotation = read_stack(image, labels, scan, axis, crop[AXES.index(axis)])
        images.append(stack)
        annotations.append(annotation)
    return images, annotations, WholeVolume(scan.shape, stats, scan.classes, scan.counts)


def annotated_probabilities(
    model: Model, image: Source, labels: Source, scan: LabelScan, device: Device = "auto", chunks=None
) -> tuple[np.ndarray, Annotation]:
    """The network's probabilities on every annotated voxel of ``scan``, predicting only the windows over them.

    The blocks are those `segment_source` cuts for an output of ``chunks``, so each annotated
    voxel gets the probabilities the segmentation gives it. Returns the (K, N) probabilities,
    before `sparseseg.method.core.decide`, of the N annotated voxels in the order of the whole
    volume's mask, and their `Annotation` (a mask of N voxels, all annotated): what
    `sparseseg.method.core.calibrate` takes.
    """
    where, probabilities, targets = [], [], []
    last = {}  # the labels block and mask last read: run_model asks needed(zyx), then writes that block

    def annotated(zyx):
        key = tuple(s.start for s in zyx)
        if key not in last:
            last.clear()
            block = np.asarray(labels.read_raw(zyx))[0]
            last[key] = block, scan.mask(block, zyx)
        return last[key]

    def add(zyx, p):
        block, mask = annotated(zyx)
        probabilities.append(p[:, mask])
        targets.append(scan.target(block, mask)[mask])
        local = np.nonzero(mask)
        where.append(np.ravel_multi_index([i + s.start for i, s in zip(local, zyx)], scan.shape))

    run_model(model, image, add, device, chunks=chunks, wanted=Wanted(needed=lambda zyx: annotated(zyx)[1]))
    order = np.argsort(np.concatenate(where), kind="stable")  # the voxels in the order of the whole volume's mask
    target = np.concatenate(targets)[order]
    return np.concatenate(probabilities, axis=1)[:, order], Annotation(
        scan.classes, target, np.ones(target.shape, bool), {}
    )


def calibrate_slabs(
    model: Model, image: Source, labels: Source, scan: LabelScan, device: Device = "auto", chunks=None
) -> Model:
    """`sparseseg.method.core.calibrate` on every annotated voxel (`annotated_probabilities`); returns the calibrated
    model."""
    if not model.config.calibrate:
        return model
    probabilities, annotated = annotated_probabilities(model, image, labels, scan, device, chunks)
    return calibrate(model, [probabilities], [annotated])


def model_uncertainty(model: Model, image: Source, device: Device = "auto") -> dict[str, np.ndarray]:
    """`sparseseg.method.uncertainty.plane_uncertainty` of the model's decided probabilities (with its forest, if any),
    block by block."""
    planes = PlaneEntropy(image.shape[1:])

    def add(zyx, p):
        planes.add(zyx, apply_offsets(mixed(model, p, forest_part(model, image, zyx)), model.decision_offsets))

    run_model(model, image, add, device)
    return planes.result()


def file_uncertainty(probabilities: Source, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """`sparseseg.method.uncertainty.plane_uncertainty` of a (K, Z, Y, X) probabilities source (uint8 0..255 or float
    0..1), a few planes at a time."""
    found = tuple(probabilities.shape) if probabilities.channels else tuple(probabilities.shape[1:])
    if len(found) != 4 or found[1:] != tuple(shape):
        raise InputError(
            f"{probabilities.path}: expected (classes, {', '.join(map(str, shape))}) probabilities, got {found}"
        )
    if found[0] < 2:
        raise InputError(f"{probabilities.path}: expected one channel per class (at least 2), got {found[0]}")
    scale = 255.0 if probabilities.dtype == np.uint8 else 1.0
    planes = PlaneEntropy(shape)
    for zyx in z_blocks(shape, max(1, (2**24) // found[0])):
        p = np.asarray(probabilities.read_raw(zyx)).astype(np.float32) / scale
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise InputError(
                f"{probabilities.path}: probabilities must be finite (no NaN or Inf) and lie in 0..1 (or uint8 0..255)"
            )
        planes.add(zyx, p)
    return planes.result()
