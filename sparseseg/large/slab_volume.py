"""A volume too large to hold whole, as `sparseseg.method.ensemble.fit_volume` trains on it (`Slabs`).

The network trains on the stacks of slabs around the annotated planes (`sparseseg.large.bounded.read_slabs`); the
forest's sample and the held-out planes read the annotated planes alone (`PlaneAnnotation`), and the forest's features
and the network's pass on the held-out planes read the volume block by block. Memory grows with the annotated planes,
not with the volume. On the slabs the network reads the raw channels alone (`sparseseg.method.fitting.fit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from sparseseg.config import Config
from sparseseg.io.blocks import Block, Source
from sparseseg.large.bounded import read_slabs
from sparseseg.large.slabs import LabelScan
from sparseseg.method.annotation import Annotation, plane_index, planes_mask
from sparseseg.method.core import Model, run_model
from sparseseg.method.fitting import check_pairs, fit
from sparseseg.method.plane_annotation import PlaneAnnotation
from sparseseg.method.planning import AXES
from sparseseg.method.streaming import Wanted
from sparseseg.method.training import TrainLog, WholeVolume


@dataclass(frozen=True)
class Slabs:
    """A large (C, Z, Y, X) volume as its slabs: a `sparseseg.method.volume.TrainingVolume` (`open_slabs`).

    Attributes
    ----------
    image : Source
        The raw volume.
    annotation : PlaneAnnotation
        Its annotated planes.
    stacks, stack_annotations : tuple
        The stacks of slabs around the annotated planes of each axis, and their annotations, for the network.
    places : dict
        Where each annotated plane, keyed (axis, index), lies along that axis in its stack.
    whole : WholeVolume
        The volume's shape, normalisation statistics and class counts (of the annotation as it stands).
    """

    image: Source
    annotation: PlaneAnnotation
    stacks: tuple
    stack_annotations: tuple
    places: dict
    whole: WholeVolume

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.annotation.shape

    def check(self, init: Model | None) -> None:
        check_pairs(list(self.stacks), list(self.stack_annotations), init)

    def without(self, held: dict) -> Slabs:
        kept = tuple(_stack_without(a, held, self.places) for a in self.stack_annotations)
        sheets = self.annotation.sheets
        on_held = {(a, i): sheets[a, i] for a, indices in held.items() for i in indices}
        _, targets = PlaneAnnotation(self.annotation.classes, self.shape, on_held).voxels()
        counts = self.whole.counts - np.bincount(targets, minlength=len(self.whole.counts))
        whole = replace(self.whole, counts=counts)
        return replace(self, annotation=self.annotation.without(held), stack_annotations=kept, whole=whole)

    def features(self, budget: float, spacing) -> None:
        return None  # the forest computes them block by block

    def fit(self, config: Config, progress, init: Model | None, features) -> tuple[Model, TrainLog]:
        return fit(list(self.stacks), list(self.stack_annotations), config, progress, init, self.whole)

    def network_planes(
        self, model: Model, held: dict, device: torch.device, features, whole: bool
    ) -> tuple[dict, None, float]:
        """The network's probabilities on the held-out planes, running only the windows over their annotated voxels,
        block by block; it never keeps a pass over the volume."""
        start = time.perf_counter()
        pairs = [(axis, index) for axis, indices in held.items() for index in indices]
        planes = {}
        for axis, index in pairs:
            flat = tuple(n for a, n in zip(AXES, self.shape) if a != axis)
            planes[axis, index] = np.zeros((len(model.classes),) + flat, np.float32)

        def needed(zyx: Block) -> np.ndarray:
            mask = np.zeros(tuple(s.stop - s.start for s in zyx), bool)
            for axis, index, local, other in _crossing(pairs, zyx):
                mask[plane_index(axis, local)] |= self.annotation.plane(axis, index)[1][other]
            return mask

        def write(zyx: Block, p: np.ndarray) -> None:
            for axis, index, local, other in _crossing(pairs, zyx):
                planes[axis, index][(slice(None),) + other] = np.take(p, local, axis=1 + AXES.index(axis))

        run_model(model, self.image, write, device, wanted=Wanted(needed=needed))
        return planes, None, time.perf_counter() - start


def _crossing(pairs, zyx: Block):
    """The planes of ``pairs`` that cross the block at ``zyx``: (axis, index, index in the block, the block's extent on
    the plane)."""
    for axis, index in pairs:
        k = AXES.index(axis)
        if zyx[k].start <= index < zyx[k].stop:
            yield axis, index, index - zyx[k].start, tuple(s for j, s in enumerate(zyx) if j != k)


def _stack_without(annotation: Annotation, held: dict, places: dict) -> Annotation:
    """A stack's annotation without the ``held`` planes: its own axis's at their places in the stack, the other axes'
    (which cross it whole) at their indices."""
    ((axis, own),) = annotation.planes.items()
    drop = {a: list(v) for a, v in held.items() if a != axis}
    drop[axis] = [places[axis, i] for i in held.get(axis, [])]
    mask = annotation.mask & ~planes_mask(drop, annotation.mask.shape)
    planes = {axis: [p for p in own if p not in drop[axis]]}
    return Annotation(annotation.classes, np.where(mask, annotation.target, 0), mask, planes)


def open_slabs(image: Source, labels: Source, scan: LabelScan, config: Config, init: Model | None = None) -> Slabs:
    """The `Slabs` of a volume and its sparse labels, as `scan` found them; needs `sparseseg.large.bounded.fits_slabs`.

    The stacks are read once (`sparseseg.large.bounded.read_slabs`); each annotated plane is taken from its stack.
    """
    stacks, annotations, whole = read_slabs(image, labels, scan, config, init)
    sheets, places = {}, {}
    for annotation in annotations:
        ((axis, in_stack),) = annotation.planes.items()
        for index, place in zip(sorted(scan.planes[axis]), sorted(in_stack)):
            places[axis, index] = place
            sheets[axis, index] = annotation.plane(axis, place)
    planes = PlaneAnnotation(scan.classes, scan.shape, sheets)
    return Slabs(image, planes, tuple(stacks), tuple(annotations), places, whole)
