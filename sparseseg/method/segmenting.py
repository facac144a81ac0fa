"""Segmenting the image `sparseseg.method.ensemble.fit_estimated` trained on, with what it kept: the image and its
annotation, the network's pass over the volume (where it was not fine-tuned after the estimate) and the volume's filter
features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparseseg.errors import InputError
from sparseseg.method.core import Device, Model, Segmentation, segment, segment_calibrated
from sparseseg.method.features import VolumeFeatures
from sparseseg.method.holdout import Estimate
from sparseseg.method.progress import Progress, as_progress, begin, watched
from sparseseg.method.training import TrainLog
from sparseseg.method.volume import InMemory, TrainingVolume


@dataclass
class Estimated:
    """What `fit_estimated` returns: the model, the training log of both phases, and the estimate (None: none could be
    made)."""

    model: Model
    train_log: TrainLog
    estimate: Estimate | None
    #: The network's probabilities and windows over the whole volume, kept where the network was not
    #: fine-tuned after the estimate (and weighs something in the blend): `segment_estimated` uses them.
    network: tuple[np.ndarray, list] | None = None
    #: The volume's filter features (`sparseseg.method.features.volume_features`), where computed and the
    #: segmentation needs them (the forest weighs something, or the network reads them): `segment_estimated` uses them.
    features: VolumeFeatures | None = None
    #: The volume trained on (`sparseseg.method.volume`), as given: what `segment_estimated` segments.
    volume: TrainingVolume | None = None
    #: The device the network was trained on: where `segment_estimated` runs unless told otherwise.
    device: torch.device | None = None


def segment_estimated(
    estimated: Estimated, device: Device | None = None, progress: Progress | None = None
) -> tuple[Model, Segmentation]:
    """Segment the image `fit_estimated` trained on (``estimated.volume``): with the offsets chosen on the held-out
    planes, or (no estimate) calibrated on the annotation as `sparseseg.method.core.segment_calibrated` does.

    The network's probabilities ``estimated.network`` and the volume's features ``estimated.features`` are used
    where `fit_estimated` kept them, and handed over: both are None afterwards (the blend works in place).
    ``device``: where to run (None: ``estimated.device``, where it was trained). ``progress`` hears the phase
    'segmenting', and can cancel it. A volume held as slabs is segmented block by block instead
    (`sparseseg.large.bounded`): an `InputError` here.
    """
    volume = estimated.volume
    if not isinstance(volume, InMemory):
        raise InputError("only a volume held whole is segmented here", param="estimated", value=type(volume).__name__)
    if device is None:
        device = "auto" if estimated.device is None else estimated.device
    progress = as_progress(progress)
    with watched(progress):
        begin(progress, "segmenting")
        model = estimated.model
        if estimated.estimate is None:
            return segment_calibrated(model, volume.image, volume.annotation, device)
        kept, estimated.network = estimated.network, None
        features, estimated.features = estimated.features, None
        return model, segment(model, volume.image, device, network=kept, features=features)
