"""Training a 3D U-Net on sparsely annotated images (`fit`): the memory check, the training plan for the device,
the loss weights, and the calibration of the class offsets after training. Errors name the library's parameters
(``patch``, ``device``, ...).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method import augment
from sparseseg.method.annotation import Annotation, weight_map
from sparseseg.method.core import Model, resolve_device
from sparseseg.method.features import VolumeFeatures, filter_features
from sparseseg.method.inputs import fit_inputs, network_image
from sparseseg.method.network import UNet3D, count_parameters
from sparseseg.method.planning import (
    anisotropy,
    pooling_kernels,
    size_multiple,
    thin_depths,
    training_patch,
)
from sparseseg.method.preprocess import normalise, normalise_with
from sparseseg.method.progress import Progress
from sparseseg.method.training import (
    TrainData,
    TrainLog,
    TrainPlan,
    WholeVolume,
    class_weights_of,
    per_image,
    train,
)

log = logging.getLogger("sparseseg")


def _out_of_memory() -> InputError:
    return InputError("out of GPU memory: lower patch or batch_size (or use the CPU)", param="device", value="cuda")


def loss_weights(annotation: Annotation, classes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class indices into ``classes`` (a superset of the annotated ones) and the per-voxel loss weights."""
    target = np.searchsorted(classes, annotation.classes[annotation.target])
    return target, weight_map(Annotation(classes, target, annotation.mask, annotation.planes), weights)


#: Rough bytes of activations and gradients per patch voxel and first-layer channel in a training step.
TRAIN_BYTES_PER_VOXEL_CHANNEL = 64


def check_memory(patch: Sequence[int], batch_size: int, base: int, device: torch.device) -> None:
    """Refuse a training step that could not fit in the device's memory, before allocating anything."""
    need = float(np.prod(patch)) * batch_size * base * TRAIN_BYTES_PER_VOXEL_CHANNEL
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise InputError(
            f"a training step needs about {need / 2**30:.0f} GiB, more than the {have / 2**30:.0f} GiB "
            "here: lower patch, batch_size or base",
            param="patch",
            value=tuple(patch),
        )


def plan_training(config: Config, shape: Sequence[int], init: Model | None, device: torch.device):
    """The resolved config (a warm start's network kept), the pooling and the training patch for a volume of ``shape``.

    Returns (config, pools, patch, clipped); raises `InputError` for a patch or a step that cannot work.
    """
    config = config.resolved(device.type == "cuda")
    if init is not None:
        config = replace(config, base=init.config.base, depth=init.config.depth, spacing=init.config.spacing)
    pools = init.network.pools if init is not None else pooling_kernels(config.spacing, config.depth)
    patch, clipped = training_patch(config.patch, shape, config.spacing, size_multiple(pools), config.batch_size)
    check_memory(patch, config.batch_size, config.base, device)
    return config, pools, patch, clipped


def _per_image_features(features, n: int) -> list:
    """`fit`'s ``features`` as one entry per image (None: to be computed)."""
    if features is None:
        return [None] * n
    features = [features] if isinstance(features, VolumeFeatures) else list(features)
    if len(features) != n:
        raise InputError(f"need one entry of features (or None) per image, got {len(features)} for {n} images")
    return features


def _network_inputs(images, wholes, features, config: Config, init: Model | None):
    """What the network reads (a warm start's, or fitted on the first image: `sparseseg.method.inputs.fit_inputs`), and
    ``inputs_of(i)``, the network's input for image i, made when asked, so that one image's is held at a time.

    Stacks of slabs (``wholes``) give no filter features (they would mix the slabs at their seams): there the network
    reads the raw channels alone.
    """
    slabs = any(w is not None for w in wholes)
    if slabs and init is not None and init.network_inputs.filters:
        raise InputError(
            "the model's network reads filter features, which the slabs of a large volume cannot give it: train anew "
            "(or read the volume whole)",
            param="init",
            value="model",
        )
    if slabs and config.filters:
        log.info("the slabs of a large volume: the network reads the raw channels alone, without filter features")
        config = replace(config, filters=False)
    given = _per_image_features(features, len(images))
    stats = [w.stats if w is not None else f.stats if f is not None else None for w, f in zip(wholes, given)]
    normalised = [normalise(image) if s is None else normalise_with(image, s) for image, s in zip(images, stats)]
    values = [None if f is None else f.values for f in given]
    if init is not None:
        inputs = init.network_inputs
    else:
        if config.filters and values[0] is None:
            values[0] = filter_features(normalised[0], config.spacing)  # once, for the statistics and the input
        inputs = fit_inputs(normalised[0], config.filters, config.spacing, values[0])

    def inputs_of(i: int) -> np.ndarray:
        image = network_image(normalised[i], inputs, values[i])
        normalised[i] = values[i] = None
        return image

    return inputs, inputs_of


def check_training(config: Config, shape: Sequence[int], init: Model | None = None) -> None:
    """Check before reading anything more that ``config`` can train on a volume of ``shape`` (raises `InputError`)."""
    plan_training(config, shape, init, resolve_device(config.device))


def check_pairs(images, annotations, init: Model | None) -> np.ndarray:
    """Refuse images and annotations that do not pair up, or that a warm start cannot take; the annotated classes."""
    if len(images) != len(annotations) or not images:
        raise InputError(f"need one annotation per image, got {len(images)} images and {len(annotations)} annotations")
    channels = images[0].shape[0]
    for image, annotation in zip(images, annotations):
        if image.ndim != 4 or image.shape[1:] != annotation.target.shape:
            raise InputError(f"image shape {image.shape[1:]} differs from label shape {annotation.target.shape}")
        if image.shape[0] != channels:
            raise InputError(f"all images need the same number of channels, got {channels} and {image.shape[0]}")
    found = np.unique(np.concatenate([a.classes for a in annotations]))
    if init is not None:
        if init.in_channels != channels:
            raise InputError(
                f"the model takes {init.in_channels} channel(s), the volume has {channels}", param="init", value="model"
            )
        missing = np.setdiff1d(found, init.classes)
        if missing.size:
            raise InputError(
                f"the model knows classes {init.classes.tolist()}, the labels also hold {missing.tolist()}",
                param="init",
                value="model",
            )
    return found


def _warnings(config: Config, images) -> list[str]:
    """What makes the result not worth much (no step, a constant volume), each logged."""
    warnings = [
        f"{name} is 0: training ends before its first step, so the segmentation comes from an untrained network"
        for name in ("iterations", "time_budget")
        if getattr(config, name) == 0
    ]
    if any(np.ptp(image[c]) == 0 for image in images for c in range(image.shape[0])):
        warnings.append(
            "the volume is constant (a channel holds one value): the network has no intensity to learn from"
        )
    for text in warnings:
        log.warning(text)
    return warnings


def _planned(config: Config, annotations, wholes, init: Model | None, device: torch.device):
    """The resolved config, the pooling and the training patch for the smallest of the volumes (a patch clipped to it
    is warned of)."""
    smallest = tuple(
        min((a.target.shape if w is None else w.shape)[i] for a, w in zip(annotations, wholes)) for i in range(3)
    )
    resolved, pools, patch, clipped = plan_training(config, smallest, init, device)
    if clipped:
        log.warning("patch %s is larger than the volume %s: clipped to %s", config.patch, smallest, patch)
    return resolved, pools, patch


def _train_plan(config: Config, patch, pools, device: torch.device, seed: int) -> TrainPlan:
    """How `train` trains, from a resolved config: the thin depths, the time (within ``time_limit``), the
    augmentation."""
    thin = thin_depths(config.thin, config.spacing, size_multiple(pools), patch) if config.thin else None
    budget = config.time_budget if config.time_limit is None else min(config.time_budget, config.time_limit)
    return TrainPlan(
        patch,
        config.batch_size,
        config.iterations,
        budget,
        config.lr,
        device,
        seed,
        config.dice,
        thin,
        augment.AugmentParams() if config.augment else None,
        anisotropy(config.spacing),
    )


def _train_said(network, data, plan: TrainPlan, progress) -> TrainLog:
    """`train`, said in the log first; CUDA running out of memory raised as `_out_of_memory` says."""
    args = (plan.device, plan.patch, plan.thin, count_parameters(network), plan.seed)
    log.info("training on %s: patch %s (thin %s), %d parameters, seed %d", *args)
    try:
        return train(network, data, plan, progress)
    except torch.OutOfMemoryError as exc:
        raise _out_of_memory() from exc


def fit(
    images: Sequence[np.ndarray],
    annotations: Sequence[Annotation],
    config: Config,
    progress: Progress | None = None,
    init: Model | None = None,
    whole: WholeVolume | Sequence[WholeVolume | None] | None = None,
    features: VolumeFeatures | Sequence[VolumeFeatures | None] | None = None,
) -> tuple[Model, TrainLog]:
    """Train a 3D U-Net on one or more sparsely annotated images.

    Parameters
    ----------
    images : sequence of ndarray, (C, Z, Y, X)
        Raw images with the same channels; each is normalised here.
    annotations : sequence of Annotation
        One per image.
    config : Config
        Settings; device-dependent defaults are filled in here.
    progress : callable, optional
        Called as ``progress(iteration, loss, elapsed_seconds)`` after each step.
    init : Model, optional
        Start from this model (a warm start) instead of random weights; its classes,
        network shape and spacing are kept.
    whole : WholeVolume or sequence of (WholeVolume or None), optional
        The images are slabs of one volume (`sparseseg.large.slabs.read_stack`): the patch is
        planned for the whole volume, the images are normalised by its statistics and the
        class weights come from its class counts. A sequence gives each image its own (the
        slabs of one volume share one object; None: the image is a volume read whole).
    features : VolumeFeatures or sequence of (VolumeFeatures or None), optional
        The images' filter features (`sparseseg.method.features.volume_features`), where computed already: with
        ``config.filters`` the network reads them beside the raw channels (`sparseseg.method.inputs`).

    Returns
    -------
    model : Model
    train_log : TrainLog
        Its ``warnings`` say when the result is not worth much (a constant volume, no step made).
    """
    found = check_pairs(images, annotations, init)
    device = resolve_device(config.device)
    wholes = per_image(whole, len(images))
    config, pools, patch = _planned(config, annotations, wholes, init, device)
    warnings = _warnings(config, images)
    seed = config.seed if config.seed is not None else secrets.randbits(31)
    torch.manual_seed(seed)
    inputs, inputs_of = _network_inputs(images, wholes, features, config, init)
    classes = init.classes if init is not None else found
    network = init.network if init is not None else UNet3D(inputs.count, len(classes), config.base, pools)
    weights = class_weights_of(annotations, classes, config.class_power, whole)
    data = [TrainData(inputs_of(i), *loss_weights(a, classes, weights), a.planes) for i, a in enumerate(annotations)]
    plan = _train_plan(config, patch, pools, device, seed)
    train_log = _train_said(network, data, plan, progress)
    train_log.warnings = warnings
    config = replace(config, seed=seed, patch=tuple(patch), filters=inputs.filters)
    model = Model(network, classes, config, images[0].shape[0], train_log.shapes, weights, inputs=inputs)
    return model, train_log
