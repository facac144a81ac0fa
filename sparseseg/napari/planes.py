"""The record of the annotated planes of a Labels layer, kept in the layer's metadata (no Qt).

Two kinds of plane are recorded per axis: planes *painted* in the viewer (annotated where they
still hold a label), and planes *marked* by the user, by name in the planes field or with "Mark
plane" (annotated as they are: their unpainted voxels are background, class 0, so a plane with no
paint on it at all is a background plane). Both travel with the layer, in its ``metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparseseg.method.annotation import parse_planes
from sparseseg.method.planning import AXES

#: The keys of a Labels layer's metadata under which the planes are kept ({'z': [12, 40]}).
PAINTED = "sparseseg_painted_planes"
MARKED = "sparseseg_marked_planes"


def _per_axis(value) -> dict[str, set[int]]:
    value = value if isinstance(value, dict) else {}
    return {axis: {int(i) for i in value.get(axis, ())} for axis in AXES}


def _as_metadata(planes: dict[str, set[int]]) -> dict[str, list[int]]:
    return {axis: sorted(indices) for axis, indices in planes.items() if indices}


@dataclass
class PlaneRecord:
    """The painted and the marked planes of one Labels layer, per axis ({'z': {12, 40}, 'y': set(), 'x': set()})."""

    painted: dict[str, set[int]] = field(default_factory=lambda: _per_axis(None))
    marked: dict[str, set[int]] = field(default_factory=lambda: _per_axis(None))

    @classmethod
    def of(cls, layer) -> PlaneRecord:
        """The record kept in ``layer``'s metadata (empty for None)."""
        metadata = {} if layer is None else layer.metadata
        return cls(_per_axis(metadata.get(PAINTED)), _per_axis(metadata.get(MARKED)))

    def save(self, layer) -> None:
        """Keep the record in ``layer``'s metadata (napari's metadata is replaced whole, so that its events fire)."""
        layer.metadata = {**layer.metadata, PAINTED: _as_metadata(self.painted), MARKED: _as_metadata(self.marked)}

    def add(self, axis: str, index: int, marked: bool = False) -> None:
        (self.marked if marked else self.painted)[axis].add(int(index))

    def add_text(self, text: str, shape) -> None:
        """Mark the planes named in ``text`` ('z=12,40 y=64'; `sparseseg.method.annotation.parse_planes`)."""
        for axis, indices in parse_planes([text.replace(";", " ")], tuple(shape)).items():
            for index in indices:
                self.add(axis, index, marked=True)

    def forget(self, axis: str, index: int) -> None:
        self.painted[axis].discard(index)
        self.marked[axis].discard(index)

    def rows(self) -> list[tuple[str, int, str]]:
        """(axis, index, 'painted' or 'marked') of each plane, axis by axis."""
        return [
            (axis, index, "marked" if index in self.marked[axis] else "painted")
            for axis in AXES
            for index in sorted(self.painted[axis] | self.marked[axis])
        ]

    def annotated(self, labels: np.ndarray) -> dict[str, list[int]]:
        """The planes taken as annotated: the marked ones, and the painted ones that still hold a label."""
        return {
            axis: sorted(self.marked[axis] | {i for i in self.painted[axis] if _holds_labels(labels, axis, i)})
            for axis in AXES
        }


def _holds_labels(labels: np.ndarray, axis: str, index: int) -> bool:
    size = labels.shape[AXES.index(axis)]
    return 0 <= index < size and bool(np.take(labels, index, axis=AXES.index(axis)).any())
