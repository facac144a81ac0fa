"""The dock widget: pick the layers, record the annotated planes, Densify in a worker thread within a time limit
(Cancel gives the run up), Suggest, save or load a model.

The work is the library's (`sparseseg.napari.loop`); this module only reads the layers, runs
it off the GUI thread and shows what comes back (`sparseseg.napari.layers`).
"""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method.progress import Cancelled
from sparseseg.napari import layers as shown
from sparseseg.napari import loop
from sparseseg.napari.plane_panel import PlanesPanel, short_list

#: Default time limit of one Densify, in seconds, everything included: short, for a loop.
DEFAULT_BUDGET = 60.0


class _Runs:
    """The run under way, held apart from the widget so that the widget's deletion (the viewer closed) can cancel it."""

    def __init__(self):
        self.progress = None
        self.closed = False

    def close(self, *args) -> None:
        self.closed = True
        if self.progress is not None:
            self.progress.cancel()


class DensifyWidget(QWidget):
    """Densify the planes annotated in a Labels layer into a segmentation of the whole volume.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers are used (napari passes it, behind its proxy).
    config : Config, optional
        Training settings; the widget sets the time limit (the whole run's) and the voxel size (from the image
        layer's ``scale``). Default: sparseseg's defaults for the device.

    Attributes
    ----------
    result : sparseseg.napari.loop.Result or None
        The last densify run.
    model : sparseseg.method.core.Model or None
        The model "Densify again" starts from: the last run's, or one loaded from a folder.
    worker : napari.qt.threading.FunctionWorker or None
        The running densify, if any.
    progress : sparseseg.napari.loop.RunProgress or None
        What the running (or last) densify told.
    """

    def __init__(self, napari_viewer, config: Config | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.config = config or Config()
        self.result = self.model = self.worker = self.progress = None
        self._runs = _Runs()
        self.destroyed.connect(self._runs.close)  # the viewer closed: the run ends at its next checkpoint
        self._build()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self.viewer.layers.events.renamed.connect(self._refresh_layers)
        self._refresh_layers()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._show_progress)

    # --- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.images = short_list(QAbstractItemView.MultiSelection, "The image layer, or several: one per channel")
        self.labels = QComboBox()
        self.labels.setToolTip("The Labels layer you paint planes in (0 on an annotated plane is background)")
        self.planes = PlanesPanel(self.viewer, self.labels_layer, self._say, self._error)
        self.labels.currentTextChanged.connect(self.planes.watch)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(10.0, 24 * 3600.0)
        self.budget.setDecimals(0)
        self.budget.setSuffix(" s")
        self.budget.setValue(self.config.time_limit or DEFAULT_BUDGET)
        self.budget.setToolTip("Largest time of one Densify, everything included")
        form = QFormLayout()
        form.addRow("image", self.images)
        form.addRow("labels", self.labels)
        form.addRow("planes", self.planes)
        form.addRow("time limit", self.budget)
        b = self._button
        self.densify_button = b("Densify", "Train a new model on the annotated planes and segment", self.densify)
        self.again_button = b("Densify again", "Train on from the last model (warm start)", lambda: self.densify(True))
        self.cancel_button = b("Cancel", "Give the run up; what it showed so far stays", self.cancel)
        self.suggest_button = b("Suggest", "Go to the plane the model is least sure about", self.suggest)
        self.save_button = b("Save model…", "Save the model as a sparseseg model folder", self._ask_save)
        self.load_button = b("Load model…", "Load a model folder to densify again from", self._ask_load)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.estimate = self._label("")
        self.status = self._label("Paint a few planes, then Densify.")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for row in (
            (self.densify_button, self.again_button),
            (self.cancel_button, self.suggest_button),
            (self.save_button, self.load_button),
        ):
            line = QHBoxLayout()
            for button in row:
                line.addWidget(button)
            layout.addLayout(line)
        for widget in (self.bar, self.estimate, self.status):
            layout.addWidget(widget)
        layout.addStretch()
        self._enable()

    def _button(self, text: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda checked=False: slot())
        return button

    def _label(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # a long line wraps, never widens the dock
        return label

    def _enable(self) -> None:
        busy = self.worker is not None
        for button in (self.densify_button, self.load_button):
            button.setEnabled(not busy)
        self.again_button.setEnabled(not busy and self.model is not None)
        self.suggest_button.setEnabled(not busy and self.result is not None)
        self.save_button.setEnabled(not busy and self.model is not None)
        self.cancel_button.setEnabled(busy)

    # --- layers and planes ------------------------------------------------------------

    def _layers_of(self, kind: type) -> list:
        """The viewer's layers of ``kind`` that are not the widget's own results."""
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, kind) and not layer.name.startswith(("sparseseg ", shown.NEXT_PLANE))
        ]

    def _refresh_layers(self, event=None) -> None:
        picked = {item.text() for item in self.images.selectedItems()}
        self.images.clear()
        for layer in self._layers_of(Image):
            item = QListWidgetItem(layer.name)
            self.images.addItem(item)
            item.setSelected(layer.name in picked)
        if not self.images.selectedItems() and self.images.count():
            self.images.item(0).setSelected(True)
        current = self.labels.currentText()
        self.labels.blockSignals(True)
        self.labels.clear()
        self.labels.addItems([layer.name for layer in self._layers_of(Labels)])
        if current:
            self.labels.setCurrentText(current)
        self.labels.blockSignals(False)
        self.planes.watch(self.labels.currentText())

    @property
    def painted(self) -> dict[str, set[int]]:
        """The planes painted per axis ({'z': {12, 40}, ...}) in the chosen Labels layer."""
        return self.planes.record.painted

    def image_layers(self) -> list:
        """The picked image layers (channels), in the viewer's order."""
        names = {item.text() for item in self.images.selectedItems()}
        return [layer for layer in self._layers_of(Image) if layer.name in names]

    def labels_layer(self):
        """The picked Labels layer, or None."""
        name = self.labels.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # --- densify ----------------------------------------------------------------------

    def _inputs(self, warm: bool):
        """The image, the annotation and how it was found, and the config of a run; an `InputError` says what is
        wrong."""
        self.planes.add_typed()
        images, labels = self.image_layers(), self.labels_layer()
        if labels is None:
            raise InputError("add a Labels layer and paint a few planes in it")
        image = loop.image_of([layer.data for layer in images])
        if image.shape[1:] != labels.data.shape:
            raise InputError(f"the image {image.shape[1:]} and the labels {labels.data.shape} differ in shape")
        annotation, how = loop.annotation_of(labels.data, self.planes.record, self.config.unlabeled)
        if warm and self.model is not None:
            loop.check_warm_start(self.model, image, annotation)
        self._scale = tuple(images[0].scale[-3:])
        config = loop.training_config(self.config, self.budget.value(), loop.spacing_of(self._scale))
        return image, annotation, how, config

    def densify(self, warm: bool = False) -> None:
        """Start a run on the annotated planes in a worker thread (from the last model with ``warm``)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        try:
            image, annotation, how, config = self._inputs(warm)
        except InputError as exc:
            self._error(exc)
            return
        self._say(f"densify: {how}")
        self.estimate.setText("")  # the last run's, until this one's
        self.progress = self._runs.progress = loop.RunProgress(self.budget.value())
        self.worker = create_worker(
            loop.densify,
            image,
            annotation,
            config,
            self.progress,
            self.model if warm else None,
            _start_thread=False,
            _ignore_errors=True,
        )
        self.worker.returned.connect(self._finished)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._stopped)
        self._enable()
        self.bar.setValue(0)
        self._timer.start()
        self.worker.start()

    def cancel(self) -> None:
        """Give the run up: it ends at its next checkpoint, within seconds; what it showed so far stays."""
        if self.progress is not None and self.worker is not None:
            self.progress.cancel()
            self._say("cancelling…")

    def _show_progress(self) -> None:
        p = self.progress
        if p is None or self._runs.closed:
            return
        preview = p.take_preview()
        if preview is not None:
            shown.show_preview(self.viewer, preview, self._scale)
            self._keep_painting()
        self.bar.setValue(int(1000 * p.fraction))
        if not p.cancelled:
            self._say(p.said())

    def _finished(self, result) -> None:
        if self._runs.closed:
            return
        self._timer.stop()  # a tick between this and `_stopped` would say the run's progress over the result
        self.result, self.model = result, result.model
        shown.show_result(self.viewer, result, self._scale)
        self._keep_painting()
        log = result.train_log
        self.estimate.setText(estimate_said(result.model.estimate))
        ended = {"time": "the time limit", "iterations": "the step limit"}.get(log.stopped_by, log.stopped_by)
        said = [
            f"done in {self.progress.elapsed:.0f} s: {log.iterations} network steps, ended by {ended}.",
            *log.warnings,
        ]
        self._say(" ".join([*said, "Suggest shows where to paint next."]))

    def _failed(self, exc: Exception) -> None:
        """Say a cancel, a bad input or a bug in the status line; the last two in napari's notifications too."""
        if self._runs.closed:
            return
        self._timer.stop()
        if isinstance(exc, Cancelled):
            self._say(f"cancelled after {self.progress.elapsed:.0f} s")
            return
        self._error(exc if isinstance(exc, InputError) else f"densify failed: {type(exc).__name__}: {exc}")

    def _stopped(self) -> None:
        if self._runs.closed:
            return
        self._timer.stop()
        self.worker = self._runs.progress = None
        self.bar.setValue(1000 if self.result is not None else 0)
        self._enable()

    def _keep_painting(self) -> None:
        """The chosen Labels layer stays the active one, so that the next stroke goes there."""
        layer = self.labels_layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer

    # --- suggest, save, load ----------------------------------------------------------

    def suggest(self):
        """Move the viewer to the plane the last result is least sure about and outline it; returns the suggestion."""
        if self.result is None:
            self._say("error: Densify first: the suggestion comes from the model's uncertainty")
            return None
        suggestion = self.result.suggestion()
        if suggestion is None:
            self._say("no unannotated plane is left to suggest")
            return None
        shape = self.result.annotation.target.shape
        shown.go_to_plane(self.viewer, suggestion.axis, suggestion.index, shape, self._scale)
        self._keep_painting()
        self._say(
            f"paint {suggestion.axis}={suggestion.index} next (uncertainty {suggestion.uncertainty:.3f}), "
            "then Densify again"
        )
        return suggestion

    def save_model(self, folder) -> Path | None:
        """Save the current model as a model folder (an existing model there is replaced)."""
        from sparseseg.method.modelfolder import save_model

        try:
            path = save_model(folder, self.model, overwrite=True)
        except InputError as exc:
            self._error(exc)
            return None
        self._say(f"model saved to {path}")
        return path

    def load_model(self, folder) -> None:
        """Load a model folder: "Densify again" then starts from it."""
        from sparseseg.method.modelfolder import load_model

        try:
            self.model = load_model(folder)
        except InputError as exc:
            self._error(exc)
            return
        self._say(f"model loaded from {folder}: classes {self.model.classes.tolist()}; Densify again trains on from it")
        self._enable()

    def _ask_save(self) -> None:
        folder, _ = QFileDialog.getSaveFileName(self, "Save the model as a folder")
        if folder:
            self.save_model(folder)

    def _ask_load(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Load a sparseseg model folder")
        if folder:
            self.load_model(folder)

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _error(self, error) -> None:
        """An error in the status line and in napari's notifications."""
        from napari.utils.notifications import show_error

        self._say(f"error: {error}")
        show_error(f"sparseseg: {error}")


def estimate_said(estimate: dict | None) -> str:
    """The run's estimate in a few words: the IoU on the voxels nobody painted, its spread and its value on each
    held-out plane, and the network's weight in the blend; where none was made, how to get one."""
    if not estimate or estimate.get("iou") is None:
        return "no quality estimate (paint two planes of one axis for one)"
    spread = estimate.get("spread")
    plus = f" ± {spread:.2f}" if isinstance(spread, (int, float)) else ""
    planes = ", ".join(f"{k} {v:.2f}" for k, v in (estimate.get("per_plane") or {}).items() if v is not None)
    return (
        f"estimated IoU {estimate['iou']:.2f}{plus} on unpainted voxels"
        + (f" (held-out planes: {planes})" if planes else "")
        + f"; network weight {estimate['blend']:.1f}"
    )
