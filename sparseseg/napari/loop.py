"""The annotate, densify, look loop on the arrays of napari layers: library calls only, no GUI.

The widget reads its layers into arrays, and this module turns them into the library's inputs
(an image, an `Annotation`, a voxel size), densifies in a worker thread with a progress object
that a Cancel button can stop, and ranks the plane to annotate next.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sparseseg import UNLABELED
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method.annotation import Annotation, parse_planes, read_annotation
from sparseseg.method.planning import AXES
from sparseseg.method.uncertainty import Suggestion, entropy, plane_uncertainty, rank_planes


@dataclass
class Result:
    """One densify run.

    Attributes
    ----------
    model : sparseseg.method.core.Model
        The trained (calibrated) model; the next run can warm-start from it.
    train_log : sparseseg.method.training.TrainLog
        What training did; ``stopped_by`` is 'stop' after Cancel.
    segmentation : sparseseg.method.core.Segmentation
        Labels (Z, Y, X) and probabilities (K, Z, Y, X) of the whole volume.
    annotation : Annotation
        What was trained on, with its annotated planes.
    """

    model: object
    train_log: object
    segmentation: object
    annotation: Annotation

    @property
    def cancelled(self) -> bool:
        return self.train_log.stopped_by == "stop"

    def annotated_classes(self) -> np.ndarray:
        """The class values of the annotated voxels (in the order of ``annotation.mask``'s True voxels)."""
        a = self.annotation
        return a.classes[a.target[a.mask]]

    def labels(self) -> np.ndarray:
        """The segmentation with the annotated voxels as painted: what the user painted stays as it is."""
        labels = self.segmentation.labels.copy()
        labels[self.annotation.mask] = self.annotated_classes()
        return labels

    def fit(self) -> float:
        """Fraction of the annotated voxels on which the network's own segmentation agrees with the annotation.

        It is measured on the voxels trained on, so it says how well the model fits them, not how
        good the segmentation is elsewhere.
        """
        return float(np.mean(self.segmentation.labels[self.annotation.mask] == self.annotated_classes()))

    def uncertainty(self) -> np.ndarray:
        """Normalised predictive entropy per voxel (Z, Y, X), 0 (sure) to 1."""
        return entropy(self.segmentation.probabilities)

    def suggestion(self) -> Suggestion | None:
        """The unannotated plane the model is least sure about (`sparseseg.method.uncertainty.rank_planes`), None if
        none is left."""
        ranked = rank_planes(plane_uncertainty(self.segmentation.probabilities), self.annotation.planes, top=1)
        return ranked[0] if ranked else None


class TrainingProgress:
    """Progress of a training run, written by the worker thread and read by the GUI; `cancel` asks it to stop.

    Called as ``progress(iteration, loss, elapsed)`` after each step (`sparseseg.method.training.Progress`);
    its ``stop_requested`` ends the run before the next step, keeping the model so far.

    Parameters
    ----------
    iterations : int
        The run's largest number of steps.
    time_budget : float
        The run's time budget in seconds.
    """

    def __init__(self, iterations: int, time_budget: float):
        self.iterations = iterations
        self.time_budget = time_budget
        self.iteration = 0
        self.loss = float("nan")
        self.elapsed = 0.0
        self.started = time.perf_counter()
        self.stop_requested = False

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.iteration, self.loss, self.elapsed = iteration, loss, elapsed

    def cancel(self) -> None:
        """Ask the run to stop after the current step."""
        self.stop_requested = True

    @property
    def fraction(self) -> float:
        """How far training is, 0..1: the nearer of the step limit and the time budget."""
        elapsed = time.perf_counter() - self.started
        done = max(self.iteration / max(self.iterations, 1), elapsed / self.time_budget if self.time_budget else 1.0)
        return min(done, 1.0)


def image_of(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The (C, Z, Y, X) float32 image of one (Z, Y, X) array per channel (image layers' data)."""
    if not arrays:
        raise InputError("pick at least one image layer")
    channels = [np.asarray(a) for a in arrays]
    for a in channels:
        if a.ndim != 3:
            raise InputError(f"an image layer must be 3D (Z, Y, X), got shape {a.shape}")
        if a.shape != channels[0].shape:
            raise InputError(f"the image layers differ in shape: {channels[0].shape} and {a.shape}")
    return np.stack(channels).astype(np.float32, copy=False)


def spacing_of(scale: Sequence[float]) -> tuple[float, float, float]:
    """The voxel size (z, y, x) of a layer's ``scale`` (its last three entries)."""
    spacing = tuple(float(s) for s in scale[-3:])
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"the layer's scale {tuple(scale)} is not a voxel size z, y, x > 0")
    return spacing


def annotation_of(
    labels: np.ndarray, planes: str = "", painted: dict[str, set[int]] | None = None, unlabeled: int = UNLABELED
) -> tuple[Annotation, str]:
    """The annotation of a Labels layer's data, and how its annotated voxels were found, in words.

    The annotated planes are, first of all, those written in ``planes`` ('z=12,40 y=64'); else
    the planes painted in the viewer (``painted``, per axis) that still hold a label; else
    sparseseg's convention (`sparseseg.method.annotation.annotated_mask`): voxels not equal to
    ``unlabeled``, or the planes of the one axis that hold labels. On an annotated plane,
    unpainted voxels (0) are background.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"the Labels layer must be 3D (Z, Y, X), got shape {labels.shape}")
    chosen = None
    if planes.strip():
        chosen = parse_planes([planes.replace(";", " ")], labels.shape)
    elif painted and any(painted.values()):
        chosen = {a: sorted(i for i in painted.get(a, ()) if _holds_labels(labels, a, i)) for a in AXES}
        if not any(chosen.values()):
            chosen = None
    try:
        annotation, how = read_annotation(labels, unlabeled, chosen, name="labels layer")
    except InputError as exc:
        if chosen is not None:
            raise
        raise InputError(
            f"{exc}. Here: paint the planes in this viewer (2D view), or write them in the planes field (z=12,40 y=64)"
        ) from None
    if chosen is not None:
        said = " ".join(f"{a}={','.join(map(str, v))}" for a, v in chosen.items() if v)
        how = ("planes given: " if planes.strip() else "painted planes: ") + said
    return annotation, how


def _holds_labels(labels: np.ndarray, axis: str, index: int) -> bool:
    size = labels.shape[AXES.index(axis)]
    return 0 <= index < size and bool(np.take(labels, index, axis=AXES.index(axis)).any())


def training_config(config: Config, time_budget: float, spacing: tuple[float, float, float]) -> Config:
    """``config`` with the widget's time budget and the layer's voxel size."""
    return replace(config, time_budget=float(time_budget), spacing=spacing)


def progress_for(config: Config) -> TrainingProgress:
    """A `TrainingProgress` for the limits ``config`` resolves to on its device."""
    from sparseseg.method.core import resolve_device

    shown = config.resolved(resolve_device(config.device).type == "cuda")
    return TrainingProgress(shown.iterations, shown.time_budget)


def densify(
    image: np.ndarray, annotation: Annotation, config: Config, progress: TrainingProgress | None = None, init=None
) -> Result:
    """Train (from ``init``, a model, when given), calibrate and segment: `sparseseg.method.ensemble.densify_arrays`."""
    from sparseseg.method.ensemble import densify_arrays

    model, train_log, segmentation = densify_arrays(image, annotation, config, progress, init)
    return Result(model, train_log, segmentation, annotation)
