"""The dock widget: pick the layers, Densify in a worker thread (Cancel keeps the model so far), Suggest, save or load a
model.

The work is the library's (`sparseseg.napari.loop`); this module only reads the layers, runs
it off the GUI thread and shows what comes back (`sparseseg.napari.layers`).
"""

from __future__ import annotations

import contextlib
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
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method.planning import AXES
from sparseseg.napari import layers as shown
from sparseseg.napari import loop

#: Default time budget of one Densify, in seconds: short, for a loop.
DEFAULT_BUDGET = 60.0
#: The key of a Labels layer's metadata under which the widget records the planes painted in it ({'z': [12, 40]}).
PAINTED = "sparseseg_painted_planes"


class DensifyWidget(QWidget):
    """Densify the planes painted in a Labels layer into a segmentation of the whole volume.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers are used (napari passes it).
    config : Config, optional
        Training settings; the widget sets the time budget and the voxel size (from the image
        layer's ``scale``). Default: sparseseg's defaults for the device.

    Attributes
    ----------
    result : sparseseg.napari.loop.Result or None
        The last densify run.
    model : sparseseg.method.core.Model or None
        The model "Densify again" starts from: the last run's, or one loaded from a folder.
    painted : dict
        The planes painted per axis ({'z': {12, 40}, ...}) of the chosen Labels layer, read from its metadata
        (`PAINTED`), where they are recorded as they are painted.
    worker : napari.qt.threading.FunctionWorker or None
        The running densify, if any.
    """

    def __init__(self, napari_viewer, config: Config | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.config = config or Config()
        self.result = None
        self.model = None
        self.worker = None
        self.progress = None
        self._watched = None  # the Labels layer whose paint events reach `_painted` (napari may hand a proxy of it)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.events.renamed.connect(self._refresh_layers)
        self._refresh_layers()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._show_progress)

    # --- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.images = QListWidget()
        self.images.setSelectionMode(QAbstractItemView.MultiSelection)
        self.images.setToolTip("The image layer, or several: one per channel")
        self.images.setMaximumHeight(90)
        self.labels = QComboBox()
        self.labels.setToolTip("The Labels layer you paint planes in (0 on a painted plane is background)")
        self.labels.currentTextChanged.connect(self._watch_labels)
        self.planes = QLineEdit()
        self.planes.setPlaceholderText("painted planes (or e.g. z=12,40 y=64)")
        self.planes.setToolTip("Leave empty to use the planes you painted; or name the annotated planes")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(1.0, 24 * 3600.0)
        self.budget.setDecimals(0)
        self.budget.setSuffix(" s")
        self.budget.setValue(self.config.time_budget or DEFAULT_BUDGET)
        self.budget.setToolTip("Largest training time of one Densify")
        form = QFormLayout()
        form.addRow("image", self.images)
        form.addRow("labels", self.labels)
        form.addRow("planes", self.planes)
        form.addRow("time budget", self.budget)

        self.densify_button = self._button(
            "Densify", "Train a new model on the painted planes and segment", self.densify
        )
        self.again_button = self._button(
            "Densify again", "Train on from the last model (warm start)", lambda: self.densify(warm=True)
        )
        self.cancel_button = self._button("Cancel", "Stop training now and segment with the model so far", self.cancel)
        self.suggest_button = self._button("Suggest", "Go to the plane the model is least sure about", self.suggest)
        self.save_button = self._button("Save model…", "Save the model as a sparseseg model folder", self._ask_save)
        self.load_button = self._button("Load model…", "Load a model folder to densify again from", self._ask_load)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.status = QLabel("Paint a few planes, then Densify.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

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
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addStretch()
        self._enable()

    def _button(self, text: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda checked=False: slot())
        return button

    def _enable(self) -> None:
        busy = self.worker is not None
        for button in (self.densify_button, self.load_button):
            button.setEnabled(not busy)
        self.again_button.setEnabled(not busy and self.model is not None)
        self.suggest_button.setEnabled(not busy and self.result is not None)
        self.save_button.setEnabled(not busy and self.model is not None)
        self.cancel_button.setEnabled(busy)

    # --- layers -----------------------------------------------------------------------

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
        self._watch_labels(self.labels.currentText())

    def _watch_labels(self, name: str) -> None:
        """Record the planes painted in the chosen Labels layer from now on.

        The layer is known by its name, not by identity: napari hands a plugin its viewer behind a proxy, and each
        ``viewer.layers[name]`` is then a new object. The record itself lives in the layer's metadata (`PAINTED`), so
        that adding, removing or renaming layers never loses it, and it travels with the layer.
        """
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is not None and self._watched is not None and layer.name == self._watched.name:
            return
        if self._watched is not None:
            with contextlib.suppress(Exception):  # the layer may be gone from the viewer already
                self._watched.events.paint.disconnect(self._painted)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._painted)

    @property
    def painted(self) -> dict[str, set[int]]:
        """The planes painted per axis ({'z': {12, 40}, ...}) in the chosen Labels layer, kept in its metadata."""
        layer = self.labels_layer()
        record = {} if layer is None else layer.metadata.get(PAINTED, {})
        return {axis: set(record.get(axis, ())) for axis in AXES}

    def _painted(self, event=None) -> None:
        layer = self._watched
        plane = shown.painted_plane(self.viewer, layer)
        if layer is None or plane is None:
            return
        record = dict(layer.metadata.get(PAINTED, {}))
        record[plane[0]] = sorted(set(record.get(plane[0], ())) | {plane[1]})
        layer.metadata = {**layer.metadata, PAINTED: record}

    def image_layers(self) -> list:
        """The picked image layers (channels), in the viewer's order."""
        names = {item.text() for item in self.images.selectedItems()}
        return [layer for layer in self._layers_of(Image) if layer.name in names]

    def labels_layer(self):
        """The picked Labels layer, or None."""
        name = self.labels.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # --- densify ----------------------------------------------------------------------

    def densify(self, warm: bool = False) -> None:
        """Start training on the painted planes in a worker thread (from the last model with ``warm``)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        try:
            images, labels = self.image_layers(), self.labels_layer()
            if labels is None:
                raise InputError("add a Labels layer and paint a few planes in it")
            image = loop.image_of([layer.data for layer in images])
            if warm and self.model is not None and image.shape[0] != self.model.in_channels:
                raise InputError(
                    f"the model takes {self.model.in_channels} channel(s), and {image.shape[0]} image layer(s) are "
                    "picked: pick as many as the model was trained on"
                )
            if image.shape[1:] != labels.data.shape:
                raise InputError(f"the image {image.shape[1:]} and the labels {labels.data.shape} differ in shape")
            annotation, how = loop.annotation_of(labels.data, self.planes.text(), self.painted, self.config.unlabeled)
            self._scale = tuple(images[0].scale[-3:])
            config = loop.training_config(self.config, self.budget.value(), loop.spacing_of(self._scale))
            self.progress = loop.progress_for(config)
        except InputError as exc:
            self._say(f"error: {exc}")
            return
        self._say(f"training: {how}")
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
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self._timer.start()
        self.worker.start()

    def cancel(self) -> None:
        """Stop training after the current step; the segmentation is made with the model so far."""
        if self.progress is not None and self.worker is not None:
            self.progress.cancel()
            self._say("stopping: segmenting with the model so far")

    def _show_progress(self) -> None:
        p = self.progress
        if p is None:
            return
        if p.iteration and p.fraction >= 1.0 or p.stop_requested:
            self.bar.setRange(0, 0)  # segmenting: busy
        else:
            self.bar.setValue(int(1000 * p.fraction))
            if p.iteration:
                self._say(f"training: step {p.iteration}, loss {p.loss:.4f}, {p.elapsed:.0f} of {p.time_budget:.0f} s")

    def _finished(self, result) -> None:
        self.result, self.model = result, result.model
        shown.show_result(self.viewer, result, self._scale)
        log = result.train_log
        said = "cancelled" if result.cancelled else f"stopped by {log.stopped_by}"
        self._say(
            f"done: {estimate_said(result.model.estimate)}; {log.iterations} network steps in {log.seconds:.0f} s "
            f"({said}). " + " ".join(log.warnings) + " Suggest shows where to paint next."
        )

    def _failed(self, exc: Exception) -> None:
        """Say a bad input in the status line; anything else goes to napari's notifications too, as a bug."""
        self._say(f"error: {exc}")
        if not isinstance(exc, InputError):
            from napari.utils.notifications import show_error

            show_error(f"sparseseg: densify failed: {type(exc).__name__}: {exc}")

    def _stopped(self) -> None:
        self._timer.stop()
        self.worker = None
        self.bar.setRange(0, 1000)
        self.bar.setValue(1000 if self.result is not None else 0)
        self._enable()

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
        shown.go_to_plane(
            self.viewer, suggestion.axis, suggestion.index, self.result.annotation.target.shape, self._scale
        )
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
            self._say(f"error: {exc}")
            return None
        self._say(f"model saved to {path}")
        return path

    def load_model(self, folder) -> None:
        """Load a model folder: "Densify again" then starts from it."""
        from sparseseg.method.modelfolder import load_model

        try:
            self.model = load_model(folder)
        except InputError as exc:
            self._say(f"error: {exc}")
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


def estimate_said(estimate: dict | None) -> str:
    """The run's estimate in a few words: the IoU on the voxels nobody painted, its spread over the held-out planes,
    and the network's weight in the blend; where none was made, how to get one."""
    if not estimate or estimate.get("iou") is None:
        return "no quality estimate (paint two planes of one axis for one)"
    spread = estimate.get("spread")
    plus = f" ± {spread:.2f}" if isinstance(spread, (int, float)) else ""
    return f"estimated IoU {estimate['iou']:.2f}{plus} on unpainted voxels (network weight {estimate['blend']:.1f})"
