"""The jobs sparseseg does, from arrays and from files.

The CLI calls one function here per command; these call the pieces (io, labels, model,
train, infer, metrics, suggest, preview). Bad input raises `InputError` before any long
work starts, and files are written only at the end, atomically.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from sparseseg import __version__, augment, io
from sparseseg.calibrate import apply_offsets, fit_offsets, prior_offsets
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.labels import (
    Annotation,
    annotated_mask,
    class_weights,
    parse_planes,
    planes_mask,
    read_annotation,
    weight_map,
    weights_from_counts,
)
from sparseseg.metrics import Scores, score
from sparseseg.model import UNet3D, count_parameters, pooling_kernels
from sparseseg.preprocess import anisotropy, default_patch, inference_windows, normalise, thin_depths
from sparseseg.train import Progress, TrainData, TrainLog, train

log = logging.getLogger("sparseseg")

NORMALISATION = "per-channel z-score after clipping to the 0.5-99.5 percentiles"


@dataclass
class Model:
    """A trained network with what is needed to apply it: its classes and its (resolved) config."""

    network: UNet3D
    classes: np.ndarray
    config: Config
    in_channels: int
    shapes: dict = field(default_factory=dict)  # training patch per annotated axis ('z', 'y', 'x'; None: cubes)
    class_weights: np.ndarray | None = None  # the loss's class weights, for the prior correction (None: not known)
    offsets: np.ndarray | None = None  # log-probability offset per class fitted by `calibrate` (None: not calibrated)

    @property
    def decision_offsets(self) -> np.ndarray:
        """The offsets `segment` adds to the log-probabilities: fitted ones, else the prior correction, else 0."""
        if self.offsets is not None:
            return self.offsets
        if self.class_weights is not None:
            return prior_offsets(self.class_weights, self.config.prior_correction)
        return np.zeros(len(self.classes))

    @property
    def windows(self) -> dict:
        """Training patch shapes to match at inference (see `inference_windows`)."""
        return self.shapes or {None: self.config.patch}

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)


@dataclass
class Segmentation:
    """labels: (Z, Y, X) with the class values; probabilities: (K, Z, Y, X) float32, row k = class ``classes[k]``.

    windows: the sliding-window shapes, one pass each (see `inference_windows`).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    seconds: float
    windows: list[tuple[int, int, int]]


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


def _out_of_memory(exc: Exception) -> InputError:
    return InputError("out of GPU memory: lower --patch or --batch-size (or use --device cpu)")


def loss_weights(annotation: Annotation, classes: np.ndarray, class_power: float) -> tuple[np.ndarray, np.ndarray]:
    """Class indices into ``classes`` (a superset of the annotated ones) and the per-voxel loss weights."""
    target = np.searchsorted(classes, annotation.classes[annotation.target])
    remapped = Annotation(classes, target, annotation.mask, annotation.planes)
    return target, weight_map(remapped, class_weights(remapped, class_power))


def fit(
    images: Sequence[np.ndarray],
    annotations: Sequence[Annotation],
    config: Config,
    progress: Progress | None = None,
    init: Model | None = None,
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
    """
    if len(images) != len(annotations) or not images:
        raise InputError(f"need one annotation per image, got {len(images)} images and {len(annotations)} annotations")
    channels = images[0].shape[0]
    for image, annotation in zip(images, annotations):
        if image.ndim != 4 or image.shape[1:] != annotation.target.shape:
            raise InputError(f"image shape {image.shape[1:]} differs from label shape {annotation.target.shape}")
        if image.shape[0] != channels:
            raise InputError(f"all images need the same number of channels, got {channels} and {image.shape[0]}")
    device = resolve_device(config.device)
    config = config.resolved(device.type == "cuda")
    seed = config.seed if config.seed is not None else secrets.randbits(31)
    torch.manual_seed(seed)
    found = np.unique(np.concatenate([a.classes for a in annotations]))
    if init is not None:
        if init.in_channels != channels:
            raise InputError(f"--init model takes {init.in_channels} channel(s), the volume has {channels}")
        missing = np.setdiff1d(found, init.classes)
        if missing.size:
            raise InputError(f"--init model knows classes {init.classes.tolist()}, the labels also hold {missing.tolist()}")
        classes, network = init.classes, init.network
        config = replace(config, base=init.config.base, depth=init.config.depth, spacing=init.config.spacing)
    else:
        classes = found
        network = UNet3D(channels, len(classes), config.base, pooling_kernels(config.spacing, config.depth))
    multiple = network.size_multiple
    smallest = tuple(min(a.target.shape[i] for a in annotations) for i in range(3))
    patch = config.patch or default_patch(smallest, config.spacing, multiple)
    if any(p % m for p, m in zip(patch, multiple)):
        raise InputError(f"--patch {','.join(map(str, patch))}: each axis must be a multiple of {multiple} for this network")
    thin = thin_depths(config.thin, config.spacing, multiple, patch) if config.thin else None
    data, counts = [], np.zeros(len(classes), dtype=np.int64)
    for image, annotation in zip(images, annotations):
        target, weights = loss_weights(annotation, classes, config.class_power)
        data.append(TrainData(normalise(image), target, weights, annotation.planes))
        counts += np.bincount(target[annotation.mask], minlength=len(classes))
    log.info("training on %s: patch %s (thin %s), %d parameters, seed %d", device, patch, thin, count_parameters(network), seed)
    try:
        train_log = train(
            network, data, patch=patch, batch_size=config.batch_size, iterations=config.iterations,
            time_budget=config.time_budget, lr=config.lr, device=device, seed=seed, dice=config.dice, thin=thin,
            params=augment.AugmentParams() if config.augment else None, anisotropy=anisotropy(config.spacing),
            progress=progress,
        )
    except torch.OutOfMemoryError as exc:
        raise _out_of_memory(exc) from exc
    model = Model(network, classes, replace(config, seed=seed, patch=tuple(patch)), channels, train_log.shapes,
                  weights_from_counts(counts, config.class_power))
    return model, train_log


def segment(model: Model, image: np.ndarray, device: str | None = None, tta: bool | None = None) -> Segmentation:
    """Apply a model to a raw (C, Z, Y, X) image with the sliding window."""
    from sparseseg.infer import predict_probabilities

    if image.ndim != 4 or image.shape[0] != model.in_channels:
        raise InputError(f"the model takes {model.in_channels} channel(s), the volume has {image.shape[0]}")
    config = model.config
    torch_device = resolve_device(device or config.device)
    windows = inference_windows(model.windows, config.patch, image.shape[1:], model.network.size_multiple)
    normalised = normalise(image)
    start = time.perf_counter()
    probabilities = None
    try:
        for window in windows:  # one pass per training patch shape, averaged
            p = predict_probabilities(model.network, normalised, window, torch_device, config.overlap, tta=config.tta if tta is None else tta)
            probabilities = p if probabilities is None else np.add(probabilities, p, out=probabilities)
    except torch.OutOfMemoryError as exc:
        raise _out_of_memory(exc) from exc
    probabilities /= len(windows)
    apply_offsets(probabilities, model.decision_offsets)
    return Segmentation(_most_probable(model, probabilities), probabilities, time.perf_counter() - start, windows)


def _most_probable(model: Model, probabilities: np.ndarray) -> np.ndarray:
    return model.classes[np.argmax(probabilities, axis=0)].astype(labels_dtype(model.classes))


def calibrate(model: Model, annotated: Sequence[np.ndarray], annotations: Sequence[Annotation]) -> tuple[Model, np.ndarray]:
    """Tune the model's class offsets on annotated voxels (`fit_offsets`).

    ``annotated[i]`` holds the (K, N_i) probabilities that `segment` gave with ``model`` on
    the annotated voxels of ``annotations[i]``. Returns the model with its new offsets and
    the change to apply to those probabilities (zeros when ``config.calibrate`` is off).
    """
    if not model.config.calibrate:
        return model, np.zeros(len(model.classes))
    target = np.concatenate([np.searchsorted(model.classes, a.classes[a.target[a.mask]]) for a in annotations])
    fitted = fit_offsets(np.concatenate(annotated, axis=1), target, foreground=model.classes != 0)
    log.info("class offsets fitted on %d annotated voxels: %s", target.size, np.round(fitted, 2).tolist())
    return replace(model, offsets=model.decision_offsets + fitted), fitted


def segment_calibrated(model: Model, image: np.ndarray, annotation: Annotation) -> tuple[Model, Segmentation]:
    """`segment` the image the model was trained on, then `calibrate` on its annotation; the model and its segmentation."""
    segmentation = segment(model, image)
    model, fitted = calibrate(model, [segmentation.probabilities[:, annotation.mask]], [annotation])
    apply_offsets(segmentation.probabilities, fitted)
    return model, replace(segmentation, labels=_most_probable(model, segmentation.probabilities))


def densify_arrays(image: np.ndarray, annotation: Annotation, config: Config, progress: Progress | None = None,
                   init: Model | None = None) -> tuple[Model, TrainLog, Segmentation]:
    """Train on one sparsely annotated (C, Z, Y, X) image, calibrate on its annotation and segment all of it."""
    model, train_log = fit([image], [annotation], config, progress, init)
    model, segmentation = segment_calibrated(model, image, annotation)
    return model, train_log, segmentation


def save_model(folder: str | os.PathLike, model: Model, overwrite: bool = False) -> Path:
    """Write a model folder: config.json (network, classes, channels, normalisation, spacing, version) and weights.pt."""
    meta = {
        "sparseseg_version": __version__,
        "in_channels": model.in_channels,
        "classes": model.classes.tolist(),
        "class_weights": None if model.class_weights is None else model.class_weights.tolist(),
        "class_offsets": None if model.offsets is None else model.offsets.tolist(),
        "pools": [list(p) for p in model.network.pools],
        "train_shapes": {axis or "cube": list(shape) for axis, shape in model.windows.items()},
        "normalisation": NORMALISATION,
        "config": model.config.to_dict(),
    }
    state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
    return io.write_model(folder, meta, state, overwrite)


def load_model(folder: str | os.PathLike) -> Model:
    """Read a model folder written by `save_model`."""
    meta, state = io.read_model(folder)
    try:
        config = Config.from_dict(meta["config"])
        classes = np.asarray(meta["classes"], dtype=np.int64)
        network = UNet3D(int(meta["in_channels"]), len(classes), config.base, [tuple(p) for p in meta["pools"]])
        network.load_state_dict(state)
        shapes = {(None if k == "cube" else k): tuple(v) for k, v in meta.get("train_shapes", {}).items()}
        weights = meta.get("class_weights")
        weights = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(len(classes))
        offsets = meta.get("class_offsets")
        offsets = None if offsets is None else np.asarray(offsets, dtype=np.float64).reshape(len(classes))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{folder}: not a sparseseg model folder ({type(exc).__name__}: {first[:200]})") from exc
    return Model(network.eval(), classes, config, int(meta["in_channels"]), shapes, weights, offsets)


@dataclass
class Outputs:
    """Where the optional extra outputs of densify and predict go."""

    probabilities: str | os.PathLike | None = None
    preview: str | os.PathLike | None = None
    overwrite: bool = False

    def check(self, *volume_outputs) -> None:
        paths = [Path(p) for p in (*volume_outputs, self.probabilities) if p is not None]
        for path in paths:
            io.check_output(path, self.overwrite)
        if self.preview is not None:
            io.check_output(self.preview, self.overwrite, suffixes=(".png",))
        if len(set(paths)) != len(paths):
            raise InputError("output paths must differ from each other")

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


def _with_spacing(config: Config, image: io.Volume) -> Config:
    if config.spacing is None and image.spacing is not None:
        return replace(config, spacing=image.spacing)
    return config


def _read_pair(volumes, labels, config: Config, planes: list[str] | None) -> tuple[io.Volume, Annotation, str]:
    image = io.read_image(volumes)
    sparse = io.read_labels(labels)
    if sparse.data.shape != image.data.shape[1:]:
        raise InputError(f"{sparse.path}: shape {sparse.data.shape} differs from the volume's {image.data.shape[1:]}")
    plane_dict = parse_planes(planes, sparse.data.shape) if planes else None
    annotation, how = read_annotation(sparse.data, config.unlabeled, plane_dict, name=str(sparse.path))
    return image, annotation, how


def densify(
    volumes: Sequence[str | os.PathLike],
    labels: str | os.PathLike,
    out: str | os.PathLike,
    config: Config = Config(),
    *,
    planes: list[str] | None = None,
    weights_out: str | os.PathLike | None = None,
    outputs: Outputs = Outputs(),
    save_model_to: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    partial: bool = True,
    progress: Progress | None = None,
) -> DensifyReport:
    """Densify from files: read, check, train, segment and write.

    Every input and output path is checked before training starts. Ctrl-C during training
    ends it early and the segmentation is made with the model trained so far; with
    ``partial=False`` nothing is written then and KeyboardInterrupt is raised.
    """
    outputs.check(out, weights_out)
    if save_model_to is not None:
        io.check_model_folder(save_model_to, outputs.overwrite)
    start_model = load_model(init) if init is not None else None
    image, annotation, how = _read_pair(volumes, labels, config, planes)
    log.info("%s: %s", labels, how)
    model, train_log = fit([image.data], [annotation], _with_spacing(config, image), progress, start_model)
    if train_log.stopped_by == "interrupt":
        if not partial:
            raise KeyboardInterrupt
        log.warning("training interrupted after %d steps: segmenting with the model so far", train_log.iterations)
    model, segmentation = segment_calibrated(model, image.data, annotation)
    written = [io.write_volume(out, segmentation.labels, reference=image, overwrite=outputs.overwrite)]
    if weights_out is not None:
        _, weights = loss_weights(annotation, model.classes, model.config.class_power)
        written.append(io.write_volume(weights_out, weights, reference=image, overwrite=outputs.overwrite))
    written += outputs.write(image, segmentation, annotation.planes)
    if save_model_to is not None:
        written.append(save_model(save_model_to, model, outputs.overwrite))
    return DensifyReport(how, model, train_log, segmentation, written)


def parse_pair(pair: str) -> tuple[list[str], str]:
    """'flair.tif,t1c.tif:labels.tif' -> (['flair.tif', 't1c.tif'], 'labels.tif')."""
    volumes, sep, labels = pair.rpartition(":")
    if not sep or not volumes or not labels:
        raise InputError(f"--pair {pair!r}: expected VOLUME[,VOLUME...]:LABELS")
    return volumes.split(","), labels


def train_files(
    pairs: Sequence[str],
    folder: str | os.PathLike,
    config: Config = Config(),
    *,
    overwrite: bool = False,
    init: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[Model, TrainLog, Path]:
    """Train one model on several sparsely annotated volumes and save it as a model folder."""
    io.check_model_folder(folder, overwrite)
    if not pairs:
        raise InputError("give at least one --pair VOLUME:LABELS")
    start_model = load_model(init) if init is not None else None
    images, annotations = [], []
    for pair in pairs:
        volumes, labels = parse_pair(pair)
        image, annotation, how = _read_pair(volumes, labels, config, None)
        if images and image.data.shape[0] != images[0].shape[0]:
            raise InputError(f"--pair {pair}: {image.data.shape[0]} channels, the first pair has {images[0].shape[0]}")
        log.info("%s: %s", labels, how)
        config = _with_spacing(config, image)
        images.append(image.data)
        annotations.append(annotation)
    model, train_log = fit(images, annotations, config, progress, start_model)
    if train_log.stopped_by == "interrupt":
        log.warning("training interrupted after %d steps: saving the model so far", train_log.iterations)
    if model.config.calibrate:
        log.info("segmenting the %d training volume(s) to calibrate the class offsets", len(images))
        annotated = [segment(model, image).probabilities[:, a.mask] for image, a in zip(images, annotations)]
        model, _ = calibrate(model, annotated, annotations)
    return model, train_log, save_model(folder, model, overwrite)


def predict(
    folder: str | os.PathLike,
    volumes: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    outputs: Outputs = Outputs(),
    device: str | None = None,
    tta: bool | None = None,
) -> tuple[Model, Segmentation, list[Path]]:
    """Apply a saved model to a new volume (the fully automatic setting) and write the segmentation."""
    outputs.check(out)
    model = load_model(folder)
    image = io.read_image(volumes)
    if image.data.shape[0] != model.in_channels:
        raise InputError(f"{image.path}: the model {folder} takes {model.in_channels} channel(s), got {image.data.shape[0]}")
    segmentation = segment(model, image.data, device, tta)
    written = [io.write_volume(out, segmentation.labels, reference=image, overwrite=outputs.overwrite)]
    return model, segmentation, written + outputs.write(image, segmentation, None)


def suggest(
    volumes: Sequence[str | os.PathLike],
    *,
    model: str | os.PathLike | None = None,
    probabilities: str | os.PathLike | None = None,
    slices: str | os.PathLike | None = None,
    unlabeled: int = 255,
    top: int = 5,
    device: str | None = None,
):
    """Rank the planes not yet annotated by the model's uncertainty (mean predictive entropy)."""
    from sparseseg.suggest import plane_uncertainty, rank_planes

    if model is None and probabilities is None:
        raise InputError("give --model DIR (to predict) or --probabilities P.tif (from densify --probabilities)")
    if top < 1:
        raise InputError(f"--top {top}: must be at least 1")
    image = io.read_image(volumes)
    shape = image.data.shape[1:]
    if probabilities is not None:
        volume = io.read_volume(probabilities)
        if volume.data.ndim != 4 or volume.data.shape[1:] != shape:
            raise InputError(f"{volume.path}: expected (classes, {', '.join(map(str, shape))}) probabilities, got {volume.data.shape}")
        if volume.data.shape[0] < 2:
            raise InputError(f"{volume.path}: expected one channel per class (at least 2), got {volume.data.shape[0]}")
        scale = 255.0 if volume.data.dtype == np.uint8 else 1.0
        probs = volume.data.astype(np.float32) / scale
        if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
            raise InputError(f"{volume.path}: probabilities must be finite (no NaN or Inf) and lie in 0..1 (or uint8 0..255)")
    else:
        probs = segment(load_model(model), image.data, device).probabilities
    annotated = None
    if slices is not None:
        sparse = io.read_labels(slices)
        if sparse.data.shape != shape:
            raise InputError(f"{sparse.path}: shape {sparse.data.shape} differs from the volume's {shape}")
        _, annotated, _ = annotated_mask(sparse.data, unlabeled, name=str(sparse.path))
    return rank_planes(plane_uncertainty(probs), annotated, top)


def preview(
    volumes: Sequence[str | os.PathLike],
    labels: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    centre: tuple[int, int, int] | None = None,
    planes: list[str] | None = None,
    unlabeled: int = 255,
    overwrite: bool = False,
) -> Path:
    """Three orthogonal planes through a volume with its labels overlaid, written as PNG."""
    from sparseseg.preview import render_preview

    io.check_output(out, overwrite, suffixes=(".png",))
    image = io.read_image(volumes)
    data = plane_dict = None
    if labels is not None:
        label_volume = io.read_labels(labels)
        data = label_volume.data
        if data.shape != image.data.shape[1:]:
            raise InputError(f"{label_volume.path}: shape {data.shape} differs from the volume's {image.data.shape[1:]}")
        if planes:
            plane_dict = parse_planes(planes, data.shape)
        elif np.any(data == unlabeled):
            _, plane_dict, _ = annotated_mask(data, unlabeled, name=str(label_volume.path))
    try:
        picture = render_preview(image.data, data, planes=plane_dict, centre=centre, spacing=image.spacing, unlabeled=unlabeled)
    except ValueError as exc:
        raise InputError(f"{out}: {exc}") from exc
    return io.write_png(out, picture, overwrite)


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


@dataclass
class SweepRow:
    k: int
    seed: int
    planes: dict[str, list[int]]
    annotated_fraction: float
    scores: Scores
    seconds: float
    offset: float | None = None  # where the planes lie in their spacing (`sparseseg.synthetic.evenly_spaced`)


def sweep_arrays(
    image: np.ndarray,
    truth: np.ndarray,
    ks: Sequence[int],
    axes: str,
    config: Config,
    progress_for: Callable[[int, int], Progress | None] = lambda k, repeat: None,
    repeats: int = 1,
    stagger: bool = False,
) -> list[SweepRow]:
    """Simulate a user who annotates k evenly spaced planes per axis, densify, and score the rest, for each k.

    Each k is trained ``repeats`` times, with seeds ``config.seed``, ``config.seed + 1``, ...
    (drawn at random when ``config.seed`` is None), the same seeds for every k. The planes
    are those of `sparseseg.synthetic.evenly_spaced`; with ``stagger``, run r of N places
    them at offset (r + 0.5) / N of their spacing (the same offset for every k), so that
    the N runs of each k together annotate every part of the volume equally often. Where
    the planes hold one class only there is nothing to train on: that run is scored as
    predicting this class everywhere.
    """
    from sparseseg.synthetic import sparsify

    first = config.seed if config.seed is not None else secrets.randbits(30)
    rows = []
    for k in ks:
        for repeat in range(repeats):
            start = time.perf_counter()
            seed = first + repeat
            offset = (repeat + 0.5) / repeats if stagger else None
            sparse, planes = sparsify(truth, k, axes, unlabeled=config.unlabeled, offset=offset)
            annotated = planes_mask(planes, truth.shape)
            seen = np.unique(truth[annotated])
            if len(seen) == 1:
                log.warning("k=%d, planes %s: only class %d is annotated; scored as %d everywhere", k, planes, seen[0], seen[0])
                labels = np.full_like(truth, seen[0])
            else:
                annotation, _ = read_annotation(sparse, config.unlabeled, planes, name=f"k={k}")
                labels = densify_arrays(image, annotation, replace(config, seed=seed), progress_for(k, repeat))[2].labels
            scores = score(labels, truth, ~annotated)
            rows.append(SweepRow(k, seed, planes, float(annotated.mean()), scores, time.perf_counter() - start, offset))
    return rows


def sweep(
    volumes: Sequence[str | os.PathLike],
    gt: str | os.PathLike,
    ks: Sequence[int],
    axes: str = "zyx",
    config: Config = Config(),
    *,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress_for: Callable[[int, int], Progress | None] = lambda k, repeat: None,
    repeats: int = 1,
    stagger: bool = False,
) -> tuple[list[SweepRow], list[Path]]:
    """`sweep_arrays` from files; with ``report`` (a folder), write sweep.csv, sweep.json and sweep.png there."""
    from sparseseg.labels import check_class_ids

    if not ks or min(ks) < 1:
        raise InputError(f"--planes {','.join(map(str, ks))}: give plane counts of at least 1, e.g. 1,2,4")
    if repeats < 1:
        raise InputError(f"--repeats {repeats}: give at least 1 training run per plane count")
    if not axes or set(axes) - set("zyx") or len(set(axes)) != len(axes):
        raise InputError(f"--axes {axes!r}: use letters from z, y, x, e.g. zyx or z")
    names = ("sweep.csv", "sweep.json", "sweep.png")
    if report is not None:
        report = Path(report)
        if not report.parent.is_dir():
            raise InputError(f"{report}: folder {report.parent} does not exist")
        if report.exists() and not report.is_dir():
            raise InputError(f"{report}: exists and is not a folder")
        for name in names:
            if (report / name).exists() and not overwrite:
                raise InputError(f"{report / name}: exists already (use --overwrite to replace it)")
    image = io.read_image(volumes)
    truth = io.read_labels(gt)
    check_class_ids(truth.data, str(truth.path))
    if truth.data.shape != image.data.shape[1:]:
        raise InputError(f"{truth.path}: shape {truth.data.shape} differs from the volume's {image.data.shape[1:]}")
    for k in ks:
        for a in axes:
            size = image.data.shape[1 + "zyx".index(a)]
            if k >= size:
                raise InputError(f"--planes {k}: the volume has {size} planes along {a}; give fewer than {size}")
    if report is not None:
        report.mkdir(exist_ok=True)
    rows = sweep_arrays(image.data, truth.data, ks, axes, _with_spacing(config, image), progress_for, repeats, stagger)
    written = [] if report is None else _write_sweep_report(report, rows, overwrite)
    return rows, written


def sweep_table(rows: Sequence[SweepRow]) -> tuple[list[str], list[list]]:
    """Header and rows of the sweep report, one per run: k, seed, annotated fraction, seconds, mean foreground IoU, IoU per class."""
    labels = sorted({c.label for row in rows for c in row.scores.classes})
    header = ["planes_per_axis", "seed", "annotated_fraction", "seconds", "mean_fg_iou"] + [f"iou_{v}" for v in labels]
    body = []
    for row in rows:
        per_class = {c.label: c.iou for c in row.scores.classes}
        body.append([row.k, row.seed, row.annotated_fraction, row.seconds, row.scores.mean("iou")]
                    + [per_class.get(v, float("nan")) for v in labels])
    return header, body


def sweep_means(rows: Sequence[SweepRow]) -> tuple[list[str], list[list]]:
    """Per k, over its runs: k, runs, the mean of each IoU column of `sweep_table`, and the lowest and highest mean foreground IoU."""
    header, body = sweep_table(rows)
    iou = header[4:]
    out = []
    for k in dict.fromkeys(line[0] for line in body):
        runs = np.array([line[4:] for line in body if line[0] == k], dtype=float)
        means = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan") for c in runs.T]
        out.append([k, len(runs)] + means + [float(runs[:, 0].min()), float(runs[:, 0].max())])
    return ["planes_per_axis", "runs"] + iou + ["mean_fg_iou_min", "mean_fg_iou_max"], out


def _write_sweep_report(folder: Path, rows: Sequence[SweepRow], overwrite: bool) -> list[Path]:
    from sparseseg.plot import line_chart

    header, body = sweep_table(rows)
    csv = "\n".join(",".join(map(str, line)) for line in [header] + body) + "\n"
    data = [{"planes_per_axis": r.k, "seed": r.seed, "offset": r.offset, "planes": r.planes,
             "annotated_fraction": r.annotated_fraction, "seconds": r.seconds, "scores": r.scores.as_dict()} for r in rows]
    names, means = sweep_means(rows)
    ks = [line[0] for line in means]
    series = {"mean foreground": (ks, [line[2] for line in means])}
    for i, name in enumerate(names[3:-2], start=3):
        if name != "iou_0":
            series[f"class {name[4:]}"] = (ks, [line[i] for line in means])
    runs = f", mean of {means[0][1]} runs" if means[0][1] > 1 else ""
    runs += ", staggered planes" if rows[0].offset is not None else ""
    picture = line_chart(series, title=f"IoU on unannotated voxels{runs}", xlabel="annotated planes per axis", ylabel="IoU")
    return [
        io.write_text(folder / "sweep.csv", csv, overwrite, suffixes=(".csv",)),
        io.write_json(folder / "sweep.json", data, overwrite),
        io.write_png(folder / "sweep.png", picture, overwrite),
    ]
