"""The jobs sparseseg does, from arrays and from files: densify and evaluate.

The CLI calls one function here per command; these call the pieces (io, labels, model,
train, infer, metrics). Bad input raises `InputError` before any long work starts.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparseseg import augment, io
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.labels import Annotation, annotated_mask, class_weights, read_annotation, weight_map
from sparseseg.metrics import Scores, score
from sparseseg.model import UNet3D, count_parameters, pooling_kernels
from sparseseg.preprocess import anisotropy, default_patch, inference_patch, normalise
from sparseseg.train import Progress, TrainData, TrainLog, train

log = logging.getLogger("sparseseg")


@dataclass
class DensifyResult:
    """What `densify_arrays` made, and how.

    labels : (Z, Y, X) dense segmentation with the annotated class values.
    probabilities : (K, Z, Y, X) float32 class probabilities; row k is class ``classes[k]``.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray
    model: UNet3D
    config: Config
    train_log: TrainLog
    patch: tuple[int, int, int]
    inference_patch: tuple[int, int, int]
    device: str
    parameters: int
    seconds_train: float
    seconds_infer: float


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    return torch.device(name)


def labels_dtype(classes: Sequence[int]) -> np.dtype:
    """uint8 for class ids up to 255, uint16 above."""
    return np.dtype(np.uint8) if max(classes) <= 255 else np.dtype(np.uint16)


def densify_arrays(
    image: np.ndarray,
    annotation: Annotation,
    config: Config,
    progress: Progress | None = None,
) -> DensifyResult:
    """Train a 3D U-Net on one sparsely annotated image and segment all of it.

    Parameters
    ----------
    image : ndarray, (C, Z, Y, X)
        The raw image; it is normalised per channel here.
    annotation : Annotation
        The sparse annotation (see `sparseseg.labels.read_annotation`).
    config : Config
        Settings; device-dependent defaults are filled in here.
    progress : callable, optional
        Called as ``progress(iteration, loss, elapsed_seconds)`` after each training step.
    """
    if image.ndim != 4 or image.shape[1:] != annotation.target.shape:
        raise InputError(f"image shape {image.shape[1:]} differs from label shape {annotation.target.shape}")
    device = resolve_device(config.device)
    config = config.resolved(device.type == "cuda")
    seed = config.seed if config.seed is not None else secrets.randbits(31)
    torch.manual_seed(seed)
    shape = annotation.target.shape
    pools = pooling_kernels(config.spacing, config.depth)
    model = UNet3D(image.shape[0], annotation.n_classes, config.base, pools)
    multiple = model.size_multiple
    patch = config.patch or default_patch(shape, annotation.planes, config.spacing, multiple)
    if any(p % m for p, m in zip(patch, multiple)):
        raise InputError(f"patch {patch}: each axis must be a multiple of {multiple} for this network")
    data = TrainData(normalise(image), annotation.target, weight_map(annotation, class_weights(annotation, config.class_power)))
    params = augment.AugmentParams() if config.augment else None
    log.info("training on %s: patch %s, %d parameters, seed %d", device, patch, count_parameters(model), seed)
    try:
        train_log = train(
            model,
            data,
            patch=patch,
            batch_size=config.batch_size,
            iterations=config.iterations,
            time_budget=config.time_budget,
            lr=config.lr,
            device=device,
            seed=seed,
            dice=config.dice,
            params=params,
            anisotropy=anisotropy(config.spacing),
            progress=progress,
        )
        start = time.perf_counter()
        window = inference_patch(patch, shape, multiple)
        probabilities = _predict(model, data.image, window, device, config)
    except torch.OutOfMemoryError as exc:
        raise InputError("out of GPU memory: lower --patch or --batch-size (or use --device cpu)") from exc
    seconds_infer = time.perf_counter() - start
    labels = annotation.classes[np.argmax(probabilities, axis=0)].astype(labels_dtype(annotation.classes))
    return DensifyResult(
        labels=labels,
        probabilities=probabilities,
        classes=annotation.classes,
        model=model,
        config=config.__class__(**{**config.to_dict(), "seed": seed, "patch": patch}),
        train_log=train_log,
        patch=patch,
        inference_patch=window,
        device=str(device),
        parameters=count_parameters(model),
        seconds_train=train_log.seconds,
        seconds_infer=seconds_infer,
    )


def _predict(model, image, window, device, config) -> np.ndarray:
    from sparseseg.infer import predict_probabilities

    return predict_probabilities(model, image, window, device, config.overlap, batch_size=1, tta=config.tta)


@dataclass
class DensifyFiles:
    """Result of `densify`: the arrays, what the annotation was taken to be, and the files written."""

    result: DensifyResult
    how: str
    written: list[Path]


def densify(
    volumes: Sequence[str | os.PathLike],
    labels: str | os.PathLike,
    out: str | os.PathLike,
    config: Config = Config(),
    *,
    planes: list[str] | None = None,
    weights_out: str | os.PathLike | None = None,
    probabilities_out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> DensifyFiles:
    """Densify from files: read, check, train, predict and write the dense segmentation.

    All inputs and output paths are checked before training starts; nothing is written
    unless the whole run succeeds, and each file is written atomically.
    """
    from sparseseg.labels import parse_planes

    outputs = [Path(p) for p in (out, weights_out, probabilities_out) if p is not None]
    for path in outputs:
        io.check_output(path, overwrite)
    if len(set(outputs)) != len(outputs):
        raise InputError("output paths must differ from each other")
    image = io.read_image(volumes)
    sparse = io.read_labels(labels)
    if sparse.data.shape != image.data.shape[1:]:
        raise InputError(f"{sparse.path}: shape {sparse.data.shape} differs from the volume's {image.data.shape[1:]}")
    plane_dict = parse_planes(planes, sparse.data.shape) if planes else None
    annotation, how = read_annotation(sparse.data, config.unlabeled, plane_dict, name=str(sparse.path))
    if config.spacing is None and image.spacing is not None:
        config = config.__class__(**{**config.to_dict(), "spacing": image.spacing})
    log.info("%s: %s", sparse.path, how)
    result = densify_arrays(image.data, annotation, config, progress)
    written = [io.write_volume(out, result.labels, reference=image, overwrite=overwrite)]
    if weights_out is not None:
        weights = weight_map(annotation, class_weights(annotation, result.config.class_power))
        written.append(io.write_volume(weights_out, weights, reference=image, overwrite=overwrite))
    if probabilities_out is not None:
        scaled = np.round(result.probabilities * 255).astype(np.uint8)
        written.append(io.write_volume(probabilities_out, scaled, reference=image, overwrite=overwrite))
    return DensifyFiles(result, how, written)


def evaluate(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    ignore: str | os.PathLike | None = None,
    unlabeled: int = 255,
) -> Scores:
    """Score a segmentation file against a ground-truth file.

    With ``ignore`` (a sparse label file), only the voxels that were not annotated there are
    scored: how well the missing planes were filled in.
    """
    prediction = io.read_labels(pred)
    truth = io.read_labels(gt)
    if prediction.data.shape != truth.data.shape:
        raise InputError(f"{prediction.path}: shape {prediction.data.shape} differs from {truth.path} {truth.data.shape}")
    mask = None
    if ignore is not None:
        sparse = io.read_labels(ignore)
        if sparse.data.shape != truth.data.shape:
            raise InputError(f"{sparse.path}: shape {sparse.data.shape} differs from {truth.path} {truth.data.shape}")
        annotated, _, _ = annotated_mask(sparse.data, unlabeled, name=str(sparse.path))
        mask = ~annotated
        if not mask.any():
            raise InputError(f"{sparse.path}: every voxel is annotated, nothing is left to score")
    return score(prediction.data, truth.data, mask)
