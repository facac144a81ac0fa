"""The annotate, densify, look loop on the arrays of napari layers: library calls only, no GUI.

The widget reads its layers into arrays, and this module turns them into the library's inputs
(an image, an `Annotation`, a voxel size), densifies in a worker thread with a progress object
that a Cancel button can stop, and ranks the plane to annotate next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sparseseg import UNLABELED
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method.annotation import Annotation, read_annotation
from sparseseg.method.progress import Quiet
from sparseseg.method.uncertainty import Suggestion, entropy, plane_uncertainty, rank_planes
from sparseseg.napari.planes import PlaneRecord


@dataclass
class Result:
    """One densify run.

    Attributes
    ----------
    model : sparseseg.method.core.Model
        The trained (calibrated) model; the next run can warm-start from it.
    train_log : sparseseg.method.training.TrainLog
        What training did (``stopped_by`` 'time' where the time limit ended it).
    segmentation : sparseseg.method.core.Segmentation
        Labels (Z, Y, X) and probabilities (K, Z, Y, X) of the whole volume.
    annotation : Annotation
        What was trained on, with its annotated planes.
    """

    model: object
    train_log: object
    segmentation: object
    annotation: Annotation

    def annotated_classes(self) -> np.ndarray:
        """The class values of the annotated voxels (in the order of ``annotation.mask``'s True voxels)."""
        a = self.annotation
        return a.classes[a.target[a.mask]]

    def labels(self) -> np.ndarray:
        """The segmentation with the annotated voxels as painted: what the user painted stays as it is."""
        labels = self.segmentation.labels.copy()
        labels[self.annotation.mask] = self.annotated_classes()
        return labels

    def uncertainty(self) -> np.ndarray:
        """Normalised predictive entropy per voxel (Z, Y, X), 0 (sure) to 1."""
        return entropy(self.segmentation.probabilities)

    def suggestion(self) -> Suggestion | None:
        """The unannotated plane the model is least sure about (`sparseseg.method.uncertainty.rank_planes`), None if
        none is left."""
        ranked = rank_planes(plane_uncertainty(self.segmentation.probabilities), self.annotation.planes, top=1)
        return ranked[0] if ranked else None


class RunProgress(Quiet):
    """What a densify run tells the widget (a `sparseseg.method.progress.Progress`): written by the worker thread, read
    by the GUI's timer.

    Parameters
    ----------
    budget : float
        The run's time limit in seconds (``Config.time_limit``), counted from now.

    Attributes
    ----------
    phase_name : str
        The phase under way (`sparseseg.method.progress.PHASES`), '' before the first.
    iteration, loss : int, float
        The last training step.
    estimate : tuple of float or None
        The last estimate told (IoU, spread): the forest's first, then the run's.
    preview : ndarray or None
        The forest's segmentation (Z, Y, X class ids), once it exists, until the widget takes it (`take_preview`).
    """

    def __init__(self, budget: float):
        self.budget = float(budget)
        self.started = time.perf_counter()
        self.phase_name = ""
        self.iteration, self.loss = 0, float("nan")
        self.estimate = None
        self._preview = None
        self._lock = threading.Lock()
        self.stop_requested = False
        self.cancelled = False

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.iteration, self.loss = iteration, loss

    def phase(self, name: str) -> None:
        self.phase_name = name

    def estimated(self, iou: float, spread: float) -> None:
        self.estimate = (iou, spread)

    def preview(self, labels: np.ndarray, source: str) -> None:
        with self._lock:
            self._preview = labels

    def take_preview(self) -> np.ndarray | None:
        """The forest's segmentation, once: None where none came since the last call."""
        with self._lock:
            labels, self._preview = self._preview, None
        return labels

    def cancel(self) -> None:
        """Give the run up: it ends at its next checkpoint (within about a second of work) without a result."""
        self.cancelled = self.stop_requested = True

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def fraction(self) -> float:
        """How far the run is through its time limit, 0..1."""
        return min(self.elapsed / self.budget, 1.0) if self.budget else 1.0

    def said(self) -> str:
        """The phase, the step, the estimate so far and the time left, in a line."""
        parts = [self.phase_name or "starting"]
        if self.iteration:
            parts.append(f"step {self.iteration}, loss {self.loss:.3f}")
        if self.estimate is not None:
            parts.append(f"estimated IoU {self.estimate[0]:.2f} so far")
        left = self.budget - self.elapsed
        parts.append(f"{left:.0f} s left" if left >= 0 else f"{-left:.0f} s over")
        return " · ".join(parts)


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


def annotation_of(labels: np.ndarray, record: PlaneRecord | None = None, unlabeled: int = UNLABELED):
    """The annotation of a Labels layer's data, and how its annotated voxels were found, in words.

    The annotated planes are those of ``record`` (`sparseseg.napari.planes.PlaneRecord.annotated`: the marked planes,
    and the painted ones that still hold a label); where it has none, sparseseg's convention
    (`sparseseg.method.annotation.annotated_mask`): voxels not equal to ``unlabeled``, or the planes of the one axis
    that hold labels. On an annotated plane, unpainted voxels (0) are background.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"the Labels layer must be 3D (Z, Y, X), got shape {labels.shape}")
    chosen = record.annotated(labels) if record is not None else None
    if chosen is not None and not any(chosen.values()):
        chosen = None
    try:
        annotation, how = read_annotation(labels, unlabeled, chosen, name="labels layer")
    except InputError as exc:
        if chosen is not None:
            raise
        raise InputError(
            f"{exc}. Here: paint the planes in this viewer (2D view), or name them in the planes field (z=12,40 y=64)"
        ) from None
    if chosen is not None:
        how = "planes: " + " ".join(f"{a}={','.join(map(str, v))}" for a, v in chosen.items() if v)
    return annotation, how


def check_warm_start(model, image: np.ndarray, annotation: Annotation) -> None:
    """Refuse, before any work, an image and an annotation that ``model`` cannot train on from where it is: other
    channels, or classes it does not know."""
    if image.shape[0] != model.in_channels:
        raise InputError(
            f"the model takes {model.in_channels} channel(s), and {image.shape[0]} image layer(s) are picked: pick as "
            "many as the model was trained on"
        )
    missing = np.setdiff1d(annotation.classes, model.classes)
    if missing.size:
        raise InputError(
            f"the model knows classes {model.classes.tolist()}, and the painting also holds {missing.tolist()}: "
            "Densify trains a new model on them"
        )


def training_config(config: Config, time_budget: float, spacing: tuple[float, float, float]) -> Config:
    """``config`` with the widget's time budget as the whole run's time limit, and the layer's voxel size."""
    return replace(config, time_budget=float(time_budget), time_limit=float(time_budget), spacing=spacing)


def densify(
    image: np.ndarray, annotation: Annotation, config: Config, progress: RunProgress | None = None, init=None
) -> Result:
    """Train (from ``init``, a model, when given), calibrate and segment: `sparseseg.method.ensemble.densify_arrays`."""
    from sparseseg.method.ensemble import densify_arrays

    model, train_log, segmentation = densify_arrays(image, annotation, config, progress, init)
    return Result(model, train_log, segmentation, annotation)
