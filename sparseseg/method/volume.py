"""The annotated volume a densify run trains on, as `sparseseg.method.ensemble.fit_volume`'s steps ask for it: held
whole (`InMemory`) or, past memory, as the slabs around its annotated planes (`sparseseg.large.slab_volume.Slabs`).

Whole or slabs is decided once, when the volume is opened; the held-out planes, the forest, the network, the estimate
and the blend are the same steps on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sparseseg.config import Config
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model, network_probabilities
from sparseseg.method.estimating import take_planes
from sparseseg.method.features import VolumeFeatures, volume_features
from sparseseg.method.fitting import check_pairs, fit
from sparseseg.method.holdout import planes_mask, without_planes
from sparseseg.method.plane_annotation import PlaneAnnotation
from sparseseg.method.progress import Progress
from sparseseg.method.training import TrainLog


class TrainingVolume(Protocol):
    """What the steps of `sparseseg.method.ensemble.fit_volume` ask of the volume they train on.

    Attributes
    ----------
    image : ndarray or `sparseseg.io.blocks.Source`, (C, Z, Y, X)
        The raw volume: the forest reads its features from it, block by block where it is a Source.
    annotation : `Annotation` or `PlaneAnnotation`
        What the forest's sample and the held-out planes read.
    shape : (Z, Y, X)
    """

    image: object
    annotation: Annotation | PlaneAnnotation

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def check(self, init: Model | None) -> None:
        """Refuse a warm start that cannot take this volume (`sparseseg.method.fitting.check_pairs`)."""

    def without(self, held: dict) -> TrainingVolume:
        """The same volume with the ``held`` planes unannotated."""

    def features(self, budget: float, spacing) -> VolumeFeatures | None:
        """The volume's filter features, where it is held whole and they fit in ``budget`` bytes; else None."""

    def fit(
        self, config: Config, progress: Progress, init: Model | None, features: VolumeFeatures | None
    ) -> tuple[Model, TrainLog]:
        """The network trained on the annotation (`sparseseg.method.fitting.fit`)."""

    def network_planes(
        self, model: Model, held: dict, device: torch.device, features: VolumeFeatures | None, whole: bool
    ) -> tuple[dict, tuple | None, float]:
        """The network's (K, plane) probabilities on the ``held`` planes (`sparseseg.method.estimating.take_planes`),
        its probabilities and windows over the whole volume where ``whole`` and it keeps them (else None), and the
        seconds taken."""


@dataclass(frozen=True)
class InMemory:
    """A volume held whole: the (C, Z, Y, X) ``image`` and its `Annotation`."""

    image: np.ndarray
    annotation: Annotation

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])

    def check(self, init: Model | None) -> None:
        check_pairs([self.image], [self.annotation], init)

    def without(self, held: dict) -> InMemory:
        return InMemory(self.image, without_planes(self.annotation, held))

    def features(self, budget: float, spacing) -> VolumeFeatures | None:
        return volume_features(self.image, budget, spacing)

    def fit(self, config, progress, init, features) -> tuple[Model, TrainLog]:
        return fit([self.image], [self.annotation], config, progress, init, None, features)

    def network_planes(self, model, held, device, features, whole) -> tuple[dict, tuple | None, float]:
        needed = None if whole else self.annotation.mask & planes_mask(held, self.annotation.mask.shape)
        probabilities, windows, seconds = network_probabilities(
            model, self.image, device, needed=needed, features=features
        )
        kept = (probabilities, windows) if whole else None
        return take_planes(probabilities, held), kept, seconds
