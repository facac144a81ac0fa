"""The widget's planes panel: the annotated planes of the chosen Labels layer as a list, recorded as they are painted,
with "Mark plane", "Forget" and a field to name planes (`sparseseg.napari.planes.PlaneRecord` keeps them)."""

from __future__ import annotations

import contextlib

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sparseseg.errors import InputError
from sparseseg.napari import layers as shown
from sparseseg.napari.planes import PlaneRecord


def short_list(selection, tip: str) -> QListWidget:
    """A list a few rows high, selecting as ``selection`` says, with a tooltip."""
    listed = QListWidget()
    listed.setSelectionMode(selection)
    listed.setToolTip(tip)
    listed.setMaximumHeight(90)
    return listed


class PlanesPanel(QWidget):
    """The annotated planes of a Labels layer: shown, recorded as painted, marked, named and forgotten.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (or napari's proxy of it).
    labels_layer : callable
        Returns the chosen Labels layer, or None.
    say, error : callable
        Show a line, or an error, to the user.
    """

    def __init__(self, viewer, labels_layer, say, error):
        super().__init__()
        self.viewer, self.labels_layer, self._say, self._error = viewer, labels_layer, say, error
        self._watched = None  # the name of the Labels layer whose paint events are recorded
        self.listed = short_list(QAbstractItemView.ExtendedSelection, "The annotated planes, recorded as you paint")
        self.typed = QLineEdit()
        self.typed.setPlaceholderText("add planes, e.g. z=12,40 y=64")
        self.typed.setToolTip("Planes annotated as they are (their unpainted voxels are background); Enter adds them")
        self.typed.returnPressed.connect(self._typed_entered)
        self.mark_button = QPushButton("Mark plane")
        self.mark_button.setToolTip("The plane shown is annotated as it is: its unpainted voxels are background")
        self.mark_button.clicked.connect(lambda checked=False: self.mark())
        self.forget_button = QPushButton("Forget")
        self.forget_button.setToolTip("Take the selected planes out of the annotation")
        self.forget_button.clicked.connect(lambda checked=False: self.forget())
        buttons = QHBoxLayout()
        buttons.addWidget(self.mark_button)
        buttons.addWidget(self.forget_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for part in (self.listed, self.typed):
            layout.addWidget(part)
        layout.addLayout(buttons)

    @property
    def record(self) -> PlaneRecord:
        """The annotated planes of the chosen Labels layer."""
        return PlaneRecord.of(self.labels_layer())

    def watch(self, name: str) -> None:
        """Record the planes painted in the Labels layer ``name`` from now on, and show its planes.

        The layer is known by its name, not by identity: napari hands a plugin its viewer behind a proxy, and each
        ``viewer.layers[name]`` is then a new object. The record lives in the layer's metadata, so that adding,
        removing or renaming layers never loses it.
        """
        layers = self.viewer.layers
        if name != self._watched or name not in layers:
            if self._watched in layers:
                with contextlib.suppress(Exception):
                    layers[self._watched].events.paint.disconnect(self._painted)
            self._watched = name if name in layers else None
            if self._watched is not None:
                layers[name].events.paint.connect(self._painted)
        self.show_planes()

    def _change(self, change) -> None:
        layer = self.labels_layer()
        if layer is None:
            self._say("error: add a Labels layer and paint a few planes in it")
            return
        record = PlaneRecord.of(layer)
        change(record)
        record.save(layer)
        self.show_planes()

    def _painted(self, event=None) -> None:
        layer = self.labels_layer()
        plane = None if layer is None else shown.painted_plane(self.viewer, layer)
        if plane is not None:
            self._change(lambda record: record.add(*plane))
            shown.drop_outline(self.viewer, *plane)

    def mark(self) -> None:
        """Take the plane the viewer shows as annotated as it is: its unpainted voxels are background."""
        layer = self.labels_layer()
        plane = None if layer is None else shown.painted_plane(self.viewer, layer)
        if plane is None:
            self._say("error: show one plane of the Labels layer (2D view) to mark it")
            return
        self._change(lambda record: record.add(*plane, marked=True))
        self._say(f"{plane[0]}={plane[1]} is annotated as it is: its unpainted voxels are background")

    def add_typed(self) -> None:
        """Add the planes named in the field to the annotated ones; an `InputError` says what is wrong with them."""
        layer, text = self.labels_layer(), self.typed.text().strip()
        if layer is None or not text:
            return
        self._change(lambda record: record.add_text(text, layer.data.shape))
        self.typed.clear()

    def _typed_entered(self) -> None:
        try:
            self.add_typed()
        except InputError as exc:
            self._error(exc)

    def forget(self) -> None:
        """Take the planes selected in the list out of the annotation."""
        chosen = [item.data(Qt.UserRole) for item in self.listed.selectedItems()]
        self._change(lambda record: [record.forget(axis, index) for axis, index in chosen])

    def show_planes(self) -> None:
        self.listed.clear()
        for axis, index, kind in self.record.rows():
            item = QListWidgetItem(f"{axis}={index}" + (" (marked)" if kind == "marked" else ""))
            item.setData(Qt.UserRole, (axis, index))
            self.listed.addItem(item)
