"""Densify with held-out planes: the network blended with a pixel classifier, and an estimate of the result.

`fit_estimated` is the method `densify` runs on a volume it reads whole:

1. One annotated plane per axis that has two or more is held out (`sparseseg.method.holdout`),
   drawn so that the classes are seen both on the held-out planes and on the others.
2. A random forest on filter features (`sparseseg.method.forest`, the ilastik-style pixel
   classifier) and the network are trained on the other planes, the network for
   `FIRST_PART` of the time budget.
3. On the held-out planes, the network's weight against the forest is chosen, each weight
   with the class offsets that suit it best there (so that the weights are compared on how
   well they rank the classes, not on how these two first models happen to be calibrated),
   and the mean foreground IoU of the best is the estimate of the IoU on the voxels nobody
   annotated, corrected by what a forest loses when it is fitted without the held-out planes,
   against its score when fitted without each annotated plane in turn
   (`sparseseg.method.holdout.plane_correction`; small forests on one sample of all the planes,
   which the forest of step 4 is then fitted on; not charged to the time budget, and not
   made after a stop, when the user wants the result at once).
4. Then both are trained on all the planes: the forest anew, the network fine-tuned for the
   rest of the budget (at a third of the learning rate, so that what was chosen on the
   held-out planes still fits it). The forest is fitted anew even where the network is not
   fine-tuned (a stop, or no budget left): it takes seconds, and without the held-out planes
   it misses a third to a half of the annotation.

The class offsets of step 3 belong to the two models they were fitted for, trained on fewer
planes: after step 4 only the weight is kept, and the network's prior correction (on the
development benchmark, applying those offsets to the final models cost up to 0.07 IoU on 5
of its 9 volumes; see docs/benchmarks.md). Where the network is not fine-tuned (Ctrl-C in
step 2, or no budget left) their offsets are applied only if the network alone is used
(weight 1): with any weight on the forest, the forest they were fitted for has been fitted
anew.

The estimate is therefore that of the models before their last part of training, on planes
they had not seen, corrected by how much the forest gains from them. Where fine-tuning
follows, step 3 runs the network only on the windows over the held-out planes (which get there
what a run over the whole volume gives them), and the time saved goes to the fine-tuning;
where it does not (a stop, or no budget left), it runs over the whole volume and the
segmentation (`segment_estimated`) uses that run; where the network was stopped before its
first step (and is no warm start), it is not run at all: the forest alone segments (weight 0),
and the estimate is the forest's. Ctrl-C in step 2 goes straight to step 3 with the network
trained so far; Ctrl-C in step 4 keeps the network fine-tuned so far. A progress object whose
``stop_requested`` turns true (`sparseseg.method.training.ctrl_c_stops_training`, as `densify` runs
this) does the same, and also at any moment between: then the step under way finishes, and no
further one starts.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, replace

import numpy as np

from sparseseg.config import Config
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import (
    Model,
    Segmentation,
    decide,
    forest_part,
    mixed,
    network_probabilities,
    prior_of,
    resolve_device,
    segment_calibrated,
)
from sparseseg.method.estimating import corrected_estimate, held_out_probabilities
from sparseseg.method.features import BLOCK_BYTES, VolumeFeatures, volume_features
from sparseseg.method.fitting import fit
from sparseseg.method.holdout import (
    Estimate,
    choose_blend,
    classes_on_planes,
    held_out_planes,
    planes_mask,
    without_planes,
)
from sparseseg.method.training import Progress, TrainLog, stop_requested

log = logging.getLogger("sparseseg")

#: Share of the time budget (and of the steps) the network trains without the held-out planes.
FIRST_PART = 0.6
#: Learning rate of the fine-tuning on all planes, as a share of ``Config.lr``.
FINE_TUNE_LR = 1 / 3


class _Shifted:
    """A progress callback that counts on from an earlier training phase (steps and seconds), asking to stop as it
    does."""

    def __init__(self, progress: Progress | None, steps: int, seconds: float):
        self.progress, self.steps, self.seconds = progress, steps, seconds

    @property
    def stop_requested(self) -> bool:
        return stop_requested(self.progress)

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        if self.progress is not None:
            self.progress(iteration + self.steps, loss, elapsed + self.seconds)


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
    #: The volume's filter features (`sparseseg.method.features.volume_features`), where the forests were fitted on them
    #: and the forest weighs something in the blend: `segment_estimated` uses them.
    features: VolumeFeatures | None = None


def _stopped(first: TrainLog, progress: Progress | None) -> bool:
    """Whether the user stopped the run (Ctrl-C, or the progress object asked), in the first phase or since."""
    return first.stopped_by in ("interrupt", "stop") or stop_requested(progress)


def _fine_tuning_follows(first: TrainLog, progress: Progress | None, shown: Config, elapsed: float) -> bool:
    """Whether the network is fine-tuned on all planes after the estimate: no stop, and steps and budget are left."""
    return not _stopped(first, progress) and shown.iterations > first.iterations and elapsed < shown.time_budget


def _shown(iou: float) -> str:
    return "-" if np.isnan(iou) else f"{iou:.3f}"


def _joined(first: TrainLog, second: TrainLog | None) -> TrainLog:
    if second is None:
        return first
    stopped = first.stopped_by if first.stopped_by in ("interrupt", "stop") else second.stopped_by
    return replace(
        second,
        iterations=first.iterations + second.iterations,
        seconds=first.seconds + second.seconds,
        losses=first.losses + second.losses,
        stopped_by=stopped,
        warnings=first.warnings + second.warnings,
    )


def fit_estimated(
    image: np.ndarray,
    annotation: Annotation,
    config: Config,
    progress: Progress | None = None,
    init: Model | None = None,
) -> Estimated:
    """Train on a sparsely annotated (C, Z, Y, X) image with held-out planes (see the module's text).

    Parameters
    ----------
    image : ndarray, (C, Z, Y, X)
        The raw image.
    annotation : Annotation
        Its annotation. Without two annotated planes on any axis (or with ``config.holdout``
        off) nothing is held out: the network is trained and calibrated on all the
        annotation, as `sparseseg.method.fitting.fit` does, and no estimate is made.
    config : Config
        ``config.forest`` blends in the forest; ``config.holdout`` holds out planes.
    progress : callable, optional
        As for `sparseseg.method.fitting.fit`, counting on over both phases; an object with an
        ``estimated(iou, spread)`` method is told the estimate when it is made.
    init : Model, optional
        A warm start, as for `sparseseg.method.fitting.fit`.
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    config = replace(config, seed=config.seed if config.seed is not None else secrets.randbits(31))
    shown = config.resolved(device.type == "cuda")
    held = (
        held_out_planes(annotation.planes, np.random.default_rng(config.seed), classes_on_planes(annotation))
        if config.holdout
        else {}
    )
    kept = without_planes(annotation, held) if held else None
    if kept is not None and (len(np.unique(kept.target[kept.mask])) < 2 or kept.mask.sum() == annotation.mask.sum()):
        held = {}  # the other planes hold one class only, or the held-out planes no annotated voxel
    if not held:
        if config.holdout:
            log.warning(
                "no estimate of the quality: it needs two annotated planes on an axis, to hold one out "
                "and keep two classes on the others"
            )
        model, train_log = fit([image], [annotation], config, progress, init)
        return Estimated(model, train_log, None)
    log.info("holding out planes %s to estimate the quality", ", ".join(f"{a}={v[0]}" for a, v in held.items()))
    forest = features = None
    if config.forest or config.filters:
        # for both forests, the segmentation and the network's inputs; where the network does not read them, only
        # where they fit in memory
        features = volume_features(image, BLOCK_BYTES if not config.filters else math.inf, config.spacing)
    if config.forest:
        # here: scikit-learn takes a second to import; bound for the refit below
        from sparseseg.method.forest import annotated_sample, fit_forest

        forest = fit_forest(image, kept, seed=config.seed, features=features, spacing=config.spacing)
        log.info("forest on the other planes: %.1f s", time.perf_counter() - start)
    first_budget = max(FIRST_PART * shown.time_budget - (time.perf_counter() - start), 0.0)
    first_steps = math.ceil(FIRST_PART * shown.iterations)
    model, first = fit(
        [image],
        [kept],
        replace(config, time_budget=first_budget, iterations=first_steps),
        progress,
        init,
        None,
        features,
    )
    # fine-tuning to follow: the network's probabilities are needed on the held-out planes only; otherwise the
    # network stays as it is, and its probabilities over the whole volume are kept for the segmentation
    whole = not _fine_tuning_follows(first, progress, shown, time.perf_counter() - start)
    probabilities = windows = None
    if whole and first.iterations == 0 and init is None and forest is not None:
        # stopped before the network's first step: it is its random start, and the forest alone decides
        log.info("the network made no training step: the forest alone segments")
        _, on_planes, *voxels, names = held_out_probabilities(model, None, forest, image, annotation, held, features)
        alone = choose_blend(on_planes, None, *voxels, model.classes != 0, names, fit=config.calibrate)
        estimate = replace(alone, blend=0.0, network_iou=float("nan"), forest_iou=alone.iou, planes=held)
    else:
        log.info("running the network over %s for the estimate", "the volume" if whole else "the held-out planes")
        needed = None if whole else annotation.mask & planes_mask(held, annotation.mask.shape)
        probabilities, windows, _ = network_probabilities(model, image, config.device, needed=needed)
        *voxels, names = held_out_probabilities(model, probabilities, forest, image, annotation, held, features)
        estimate = replace(choose_blend(*voxels, model.classes != 0, names, fit=config.calibrate), planes=held)
        if not whole:
            probabilities = None
    second = None
    elapsed = time.perf_counter() - start  # the forests below are not charged to the budget
    tunes = _fine_tuning_follows(first, progress, shown, elapsed)
    if forest is not None:
        # the user wants the result now after a stop: the small forests of the correction would take seconds more
        corrects = not _stopped(first, progress)
        if not corrects:
            log.info("stopped: the estimate is the held-out planes' score, without the forest's correction")
        # one sample of all planes, for the correction and for the forest on all planes; a blend below 1 means the
        # forest was fitted above: on all planes now, even after a stop
        if corrects or estimate.blend < 1:
            sample = annotated_sample(image, annotation, seed=config.seed, features=features, spacing=config.spacing)
            estimate = corrected_estimate(estimate, sample, annotation, held, config) if corrects else estimate
            forest = fit_forest(image, annotation, seed=config.seed, sample=sample) if estimate.blend < 1 else forest
    log.info(
        "estimated IoU %.3f +- %.3f (%.3f on the held-out planes, %+.3f as the forest fitted without each plane "
        "in turn sees it; network %s, forest %s), network weight %.1f",
        estimate.iou,
        estimate.spread,
        estimate.held_out_iou,
        estimate.correction,
        _shown(estimate.network_iou),
        _shown(estimate.forest_iou),
        estimate.blend,
    )
    if hasattr(progress, "estimated"):
        progress.estimated(estimate.iou, estimate.spread)
    if tunes:
        tune = replace(
            config,
            seed=(config.seed + 1) % 2**31,
            lr=config.lr * FINE_TUNE_LR,
            time_budget=shown.time_budget - elapsed,
            iterations=shown.iterations - first.iterations,
        )
        shifted = _Shifted(progress, first.iterations, first.seconds)
        model, second = fit([image], [annotation], tune, shifted, model, None, features)
    train_log = _joined(first, second)
    train_log.warnings += estimate.warnings
    for text in estimate.warnings:
        log.warning(text)
    blend = estimate.blend if forest is not None else 1.0
    # see the module's text: the held-out offsets are kept only for the network they were fitted for, alone; a blend
    # corrects the prior inside
    if blend < 1:
        offsets = np.zeros_like(estimate.offsets)
    else:
        offsets = prior_of(model) + (estimate.offsets if second is None else 0)
    model = replace(
        model,
        config=replace(
            model.config, seed=config.seed, lr=config.lr, time_budget=shown.time_budget, iterations=shown.iterations
        ),
        forest=forest if blend < 1 else None,
        blend=blend,
        offsets=offsets,
        estimate=estimate.as_dict(),
    )
    kept_network = (probabilities, windows) if probabilities is not None and second is None and blend > 0 else None
    return Estimated(model, train_log, estimate, kept_network, features if blend < 1 else None)


def segment_estimated(
    estimated: Estimated, image: np.ndarray, annotation: Annotation, device: str = "auto"
) -> tuple[Model, Segmentation]:
    """Segment the image `fit_estimated` trained on: with the offsets chosen on the held-out planes, or (no estimate)
    calibrated on the annotation as `sparseseg.method.core.segment_calibrated` does.

    The network's probabilities ``estimated.network`` and the volume's features
    ``estimated.features`` are used where `fit_estimated` kept them, and handed over: both are
    None afterwards (the blend works in place).
    """
    model = estimated.model
    if estimated.estimate is None:
        return segment_calibrated(model, image, annotation, device)
    start = time.perf_counter()
    kept, estimated.network = estimated.network, None
    features, estimated.features = estimated.features, None
    if model.forest is not None and model.blend == 0:  # the forest alone: the network's probabilities weigh nothing
        probabilities, windows = (
            mixed(
                model,
                np.zeros((len(model.classes),) + image.shape[1:], np.float32),
                forest_part(model, image, features=features),
            ),
            [],
        )
    else:
        network, windows = kept if kept is not None else network_probabilities(model, image, device)[:2]
        probabilities = mixed(model, network, forest_part(model, image, features=features))
    return model, Segmentation(decide(model, probabilities), probabilities, time.perf_counter() - start, windows)


def densify_arrays(
    image: np.ndarray,
    annotation: Annotation,
    config: Config,
    progress: Progress | None = None,
    init: Model | None = None,
) -> tuple[Model, TrainLog, Segmentation]:
    """Train on one sparsely annotated (C, Z, Y, X) image (`fit_estimated`) and segment all of it (on the training
    device).

    The model's ``estimate`` holds the estimate, where one was made.
    """
    estimated = fit_estimated(image, annotation, config, progress, init)
    model, segmentation = segment_estimated(estimated, image, annotation, config.device)
    return model, estimated.train_log, segmentation
