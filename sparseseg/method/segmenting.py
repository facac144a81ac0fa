"""Segmenting the image `sparseseg.method.ensemble.fit_estimated` trained on, with what it kept: the network's pass
over the volume (where it was not fine-tuned after the estimate) and the volume's filter features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model, Segmentation, segment, segment_calibrated
from sparseseg.method.features import VolumeFeatures
from sparseseg.method.holdout import Estimate
from sparseseg.method.progress import Progress, as_progress, begin, watched
from sparseseg.method.training import TrainLog


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


def segment_estimated(
    estimated: Estimated,
    image: np.ndarray,
    annotation: Annotation,
    device: str = "auto",
    progress: Progress | None = None,
) -> tuple[Model, Segmentation]:
    """Segment the image `fit_estimated` trained on: with the offsets chosen on the held-out planes, or (no estimate)
    calibrated on the annotation as `sparseseg.method.core.segment_calibrated` does.

    The network's probabilities ``estimated.network`` and the volume's features
    ``estimated.features`` are used where `fit_estimated` kept them, and handed over: both are
    None afterwards (the blend works in place). ``progress`` hears the phase 'segmenting', and can cancel it.
    """
    progress = as_progress(progress)
    with watched(progress):
        begin(progress, "segmenting")
        model = estimated.model
        if estimated.estimate is None:
            return segment_calibrated(model, image, annotation, device)
        kept, estimated.network = estimated.network, None
        features, estimated.features = estimated.features, None
        return model, segment(model, image, device, network=kept, features=features)
