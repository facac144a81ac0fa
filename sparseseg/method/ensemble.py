"""Densify with held-out planes: the network blended with a pixel classifier, and an estimate of the result.

`fit_volume` runs these steps on a volume held whole or as slabs (`sparseseg.method.volume`), telling the progress
each phase (`sparseseg.method.progress`); docs/method.md, step 6, says why each is as it is:

1. ``_held_out``: one annotated plane per axis that has two or more is held out (`sparseseg.method.holdout`).
2. ``_first_forest``: the volume's filter features and a random forest fitted on the other planes; its score on the
   held-out planes is told at once, then its segmentation of the volume: the first result.
3. ``_train_first``: the network on the other planes, for `FIRST_PART` of the time budget.
4. ``_estimate``: on the held-out planes the network's weight against the forest is chosen, with its class offsets;
   its mean foreground IoU estimates the IoU on the unannotated voxels (the network's pass is reused where it can).
5. ``_forest_on_all_planes``: the estimate is corrected by what a forest loses without the held-out planes
   (`sparseseg.method.holdout.plane_correction`), and the forest is fitted anew on all planes.
6. ``_fine_tune``: the rest of the budget on all planes, at `FINE_TUNE_LR` of the learning rate.

A stop goes on with what was trained, without the correction and the fine-tuning. ``Config.time_limit`` bounds the
whole run (`sparseseg.method.deadline`). A cancelled progress raises `sparseseg.method.progress.Cancelled`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from sparseseg.config import Config
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model, Segmentation, labels_dtype, prior_of, resolve_device
from sparseseg.method.deadline import CORRECTION_SHARE, REFIT_SHARE, Deadline, pass_steps
from sparseseg.method.estimating import corrected_estimate, forest_on_planes, held_out_probabilities
from sparseseg.method.features import BLOCK_BYTES, VolumeFeatures
from sparseseg.method.holdout import Estimate, choose_blend, classes_on_planes, held_out_planes
from sparseseg.method.progress import Progress, Shifted, as_progress, begin, watched
from sparseseg.method.segmenting import Estimated, segment_estimated
from sparseseg.method.training import TrainLog
from sparseseg.method.volume import InMemory, TrainingVolume

log = logging.getLogger("sparseseg")

#: Share of the time budget (and of the steps) the network trains without the held-out planes.
FIRST_PART = 0.6
#: Learning rate of the fine-tuning on all planes, as a share of ``Config.lr``.
FINE_TUNE_LR = 1 / 3


@dataclass
class _Run:
    """What the steps of `fit_volume` share: the volume, the held-out planes, the clock and what was made."""

    volume: TrainingVolume
    config: Config  # seeded
    shown: Config  # resolved for the device
    held: dict
    kept: TrainingVolume | None  # the volume without the held-out planes
    progress: Progress
    classes: np.ndarray
    device: torch.device
    start: float
    features: VolumeFeatures | None = None
    forest: object | None = None
    forest_seconds: float = 0.0  # the first forest's fit
    predict_seconds: float = 0.0  # its probabilities over the volume
    forest_alone: Estimate | None = None  # its score on the held-out planes
    forest_planes: dict | None = None  # its probabilities on the held-out planes
    pass_seconds: float = 0.0  # the network's pass for the estimate
    charged: float = 0.0  # seconds charged to the time budget before fine-tuning

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left of ``Config.time_limit`` (inf: no limit)."""
        limit = self.config.time_limit
        return math.inf if limit is None else limit - self.elapsed()

    def enter(self, phase: str) -> None:
        begin(self.progress, phase)


def _stopped(first: TrainLog, progress: Progress) -> bool:
    """Whether the user stopped the run (Ctrl-C, or the progress object asked), in the first phase or since."""
    return first.stopped_by in ("interrupt", "stop") or progress.stop_requested


def _tunes(run: _Run, first: TrainLog) -> bool:
    """Whether the network is fine-tuned on all planes after the estimate: no time limit, no stop, and steps and budget
    are left."""
    return (
        run.config.time_limit is None
        and not _stopped(first, run.progress)
        and run.shown.iterations > first.iterations
        and run.elapsed() < run.shown.time_budget
    )


def _shown(iou: float) -> str:
    return "-" if np.isnan(iou) else f"{iou:.3f}"


def _held_out(volume: TrainingVolume, config: Config) -> tuple[dict, TrainingVolume | None]:
    """The planes held out and the volume without them; none where ``config.holdout`` is off, where no axis has
    two annotated planes, or where the other planes would hold one class only."""
    if not config.holdout:
        return {}, None
    annotation = volume.annotation
    held = held_out_planes(annotation.planes, np.random.default_rng(config.seed), classes_on_planes(annotation))
    kept = volume.without(held) if held else None
    targets = kept.annotation.voxels()[1] if kept is not None else None
    if kept is None or len(np.unique(targets)) < 2 or len(targets) == len(annotation.voxels()[0]):
        log.warning(
            "no estimate of the quality: it needs two annotated planes on an axis, to hold one out "
            "and keep two classes on the others"
        )
        return {}, None
    log.info("holding out planes %s to estimate the quality", ", ".join(f"{a}={v[0]}" for a, v in held.items()))
    return held, kept


def _limited(run: _Run, init: Model | None, after: float) -> Progress:
    """The progress to train with: under ``Config.time_limit``, one that stops training in time for ``after`` seconds
    and the network's pass."""
    if run.config.time_limit is None:
        return run.progress
    steps = pass_steps(run.config, run.volume.shape, run.volume.annotation.planes, init, run.device)
    return Deadline(run.progress, run.start + run.config.time_limit, after, steps)


def _start(volume: TrainingVolume, config: Config, progress: Progress, init: Model | None) -> _Run:
    start = time.perf_counter()
    volume.check(init)  # before any forest: a warm start that cannot take these classes
    device = resolve_device(config.device)
    seed = config.seed if config.seed is not None else secrets.randbits(31)
    config = replace(config, seed=seed, device=device.type)  # what follows trains on the device decided here
    held, kept = _held_out(volume, config)
    classes = init.classes if init is not None else volume.annotation.classes
    shown = config.resolved(device.type == "cuda")
    return _Run(volume, config, shown, held, kept, progress, classes, device, start)


def _first_forest(run: _Run) -> None:
    """The volume's features, and the forest on the other planes with its probabilities on the held-out planes and its
    score there, told at once; then, where the features are held whole, its segmentation of the volume."""
    config = run.config
    if config.forest or config.filters:
        run.enter("features")
        # for both forests, the segmentation and the network's inputs; where the network does not read them, only
        # where they fit in memory
        run.features = run.volume.features(BLOCK_BYTES if not config.filters else math.inf, config.spacing)
    if not config.forest:
        return
    # here: scikit-learn takes a second to import
    from sparseseg.method.forest import fit_forest
    from sparseseg.method.forest_apply import features_probabilities

    run.enter("forest")
    started = time.perf_counter()
    image, kept = run.volume.image, run.kept.annotation
    run.forest = fit_forest(image, kept, seed=config.seed, sample=_sample(run, kept))
    run.forest_seconds = time.perf_counter() - started
    run.forest_planes = forest_on_planes(run.forest, image, run.classes, run.held, run.features)
    _, forests, *voxels, names = held_out_probabilities(None, None, run.forest_planes, run.volume.annotation, run.held)
    run.forest_alone = choose_blend(forests, None, *voxels, run.classes != 0, names, fit=config.calibrate)
    log.info("forest on the other planes: %.3f on the held-out planes, %.1f s", run.forest_alone.iou, run.elapsed())
    run.progress.estimated(run.forest_alone.iou, run.forest_alone.spread)  # first: it takes a fraction of the pass
    if run.features is not None:
        whole = features_probabilities(run.forest, run.features, run.classes)
        run.progress.preview(run.classes.astype(labels_dtype(run.classes))[np.argmax(whole, axis=0)], "forest")
    run.predict_seconds = time.perf_counter() - started - run.forest_seconds


def _sample(run: _Run, annotation):
    """The annotated voxels a forest is fitted on, their features taken from the volume's where computed."""
    from sparseseg.method.forest_sample import annotated_sample, features_sample

    seed = run.config.seed
    if run.features is not None:
        return features_sample(run.features, annotation, seed=seed)
    return annotated_sample(run.volume.image, annotation, seed=seed, spacing=run.config.spacing)


def _after_training(run: _Run) -> float:
    """Seconds the phases after training take besides the network's pass, foreseen: the forest's refit and its
    probabilities over the volume, where there is a forest."""
    return REFIT_SHARE * run.forest_seconds + run.predict_seconds


def _train_first(run: _Run, init: Model | None) -> tuple[Model, TrainLog]:
    """The network on the other planes: `FIRST_PART` of the budget and steps (all of them under a time limit)."""
    run.enter("network")
    limited = run.config.time_limit is not None
    share = 1.0 if limited else FIRST_PART
    budget = max(share * run.shown.time_budget - run.elapsed(), 0.0)
    steps = math.ceil(share * run.shown.iterations)
    progress = _limited(run, init, _after_training(run))
    config = replace(run.config, time_budget=budget, iterations=steps)
    model, first = run.kept.fit(config, progress, init, run.features)
    if isinstance(progress, Deadline) and progress.reached and not run.progress.stop_requested:
        first = replace(first, stopped_by="time")
    return model, first


def _estimate(run: _Run, model: Model, first: TrainLog, init: Model | None):
    """The estimate on the held-out planes and the blend chosen there; and the network's probabilities and windows
    over the whole volume, where it ran over all of it (no fine-tuning to follow), else None."""
    run.enter("estimate")
    whole = not _tunes(run, first)
    if whole and first.iterations == 0 and init is None and run.forest is not None:
        log.info("the network made no training step: the forest alone segments")
        alone = run.forest_alone
        return replace(alone, blend=0.0, network_iou=float("nan"), forest_iou=alone.iou, planes=run.held), None
    network, kept, run.pass_seconds = run.volume.network_planes(model, run.held, run.device, run.features, whole)
    log.info("the network ran over %s for the estimate", "the volume" if kept is not None else "the held-out planes")
    nets, forests, targets, planes, names = held_out_probabilities(
        network, prior_of(model), run.forest_planes, run.volume.annotation, run.held
    )
    estimate = choose_blend(nets, forests, targets, planes, model.classes != 0, names, fit=run.config.calibrate)
    return replace(estimate, planes=run.held), kept


def _fits(run: _Run, seconds: float) -> bool:
    return run.left() > seconds


def _forest_on_all_planes(run: _Run, estimate: Estimate, first: TrainLog, final: float) -> Estimate:
    """The estimate corrected by the forest fitted without each plane in turn, and the forest fitted anew on all planes
    (where it weighs something); under a time limit, the correction only where it fits before the refit and ``final``
    seconds of segmentation."""
    if run.forest is None:
        return estimate
    from sparseseg.method.forest import fit_forest

    run.enter("forest")
    # training left time for the refit: it is skipped only where the run is late by half of it
    refits = estimate.blend < 1 and _fits(run, REFIT_SHARE * run.forest_seconds / 2)
    after = (CORRECTION_SHARE + REFIT_SHARE) * run.forest_seconds + final
    corrects = not _stopped(first, run.progress) and _fits(run, after)
    if not corrects:
        log.info("the estimate is the held-out planes' score, without the forest's correction (stopped, or no time)")
    if estimate.blend < 1 and not refits:
        log.info("no time left to fit the forest on all planes: it keeps the other planes' fit")
    if not (corrects or refits):
        return estimate
    config, image, annotation = run.config, run.volume.image, run.volume.annotation
    sample = _sample(run, annotation)
    if corrects:
        estimate = corrected_estimate(estimate, sample, annotation, run.held, config)
    if refits:
        run.forest = fit_forest(image, annotation, seed=config.seed, sample=sample)
    return estimate


def _told(run: _Run, estimate: Estimate) -> None:
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
    run.progress.estimated(estimate.iou, estimate.spread)


def _fine_tune(run: _Run, model: Model, first: TrainLog) -> tuple[Model, TrainLog]:
    """The network trained on all planes for the rest of the budget and steps, at `FINE_TUNE_LR` of the learning
    rate."""
    run.enter("network")
    config = run.config
    tune = replace(
        config,
        seed=(config.seed + 1) % 2**31,
        lr=config.lr * FINE_TUNE_LR,
        time_budget=run.shown.time_budget - run.charged,
        iterations=run.shown.iterations - first.iterations,
    )
    shifted = Shifted(run.progress, first.iterations, first.seconds)
    return run.volume.fit(tune, shifted, model, run.features)


def _finished(run: _Run, model: Model, estimate: Estimate, train_log: TrainLog, tuned: bool, network) -> Estimated:
    """The model with its blend, offsets and estimate, and what its segmentation can reuse."""
    train_log.warnings += estimate.warnings
    for text in estimate.warnings:
        log.warning(text)
    blend = estimate.blend if run.forest is not None else 1.0
    # see the module's text: the held-out offsets are kept only for the network they were fitted for, alone; a blend
    # corrects the prior inside
    if blend < 1:
        offsets = np.zeros_like(estimate.offsets)
    else:
        offsets = prior_of(model) + (0 if tuned else estimate.offsets)
    shown = run.shown
    model = replace(
        model,
        config=replace(
            model.config,
            seed=run.config.seed,
            lr=run.config.lr,
            time_budget=shown.time_budget,
            iterations=shown.iterations,
        ),
        forest=run.forest if blend < 1 else None,
        blend=blend,
        offsets=offsets,
        estimate=estimate.as_dict(),
    )
    network = network if network is not None and not tuned and blend > 0 else None
    needs_features = blend < 1 or (model.network_inputs.filters and network is None and blend > 0)
    return Estimated(model, train_log, estimate, network, run.features if needs_features else None, device=run.device)


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
        ``config.forest`` blends in the forest; ``config.holdout`` holds out planes; ``config.time_limit`` bounds
        the run.
    progress : Progress or callable, optional
        Told the steps (counting on over both phases), the phases, the forest's first segmentation and the
        estimates (`sparseseg.method.progress`); it can stop or cancel the run.
    init : Model, optional
        A warm start, as for `sparseseg.method.fitting.fit`.
    """
    return fit_volume(InMemory(image, annotation), config, progress, init)


def _fitted(volume: TrainingVolume, config: Config, progress: Progress | None, init: Model | None) -> Estimated:
    """`fit_volume`'s steps."""
    progress = as_progress(progress)
    with watched(progress):
        run = _start(volume, config, progress, init)
        if not run.held:
            run.enter("network")
            model, train_log = volume.fit(run.config, _limited(run, init, 0.0), init, None)
            return Estimated(model, train_log, None, device=run.device)
        _first_forest(run)
        model, first = _train_first(run, init)
        estimate, network = _estimate(run, model, first, init)
        run.charged = run.elapsed()  # the forests below are not charged to the budget
        tunes = _tunes(run, first)
        final = run.predict_seconds + (run.pass_seconds if network is None and estimate.blend > 0 else 0.0)
        estimate = _forest_on_all_planes(run, estimate, first, final)
        _told(run, estimate)
        second = None
        if tunes:
            model, second = _fine_tune(run, model, first)
        return _finished(run, model, estimate, first.then(second), second is not None, network)


def fit_volume(
    volume: TrainingVolume, config: Config, progress: Progress | None = None, init: Model | None = None
) -> Estimated:
    """`fit_estimated` on a volume held whole or as slabs (`sparseseg.method.volume`): the same steps on both.

    The returned `Estimated` keeps the volume and the device trained on, and the network's pass and the features only
    for a volume held whole.
    """
    return replace(_fitted(volume, config, progress, init), volume=volume)


def densify_arrays(
    image: np.ndarray,
    annotation: Annotation,
    config: Config = Config(),
    progress: Progress | None = None,
    init: Model | None = None,
) -> tuple[Model, TrainLog, Segmentation]:
    """Train on one sparsely annotated (C, Z, Y, X) image (`fit_estimated`) and segment all of it (on the training
    device).

    ``config`` (default: `Config`'s defaults) and ``init`` (a warm start) as for `fit_estimated`. The model's
    ``estimate`` holds the estimate, where one was made. ``progress`` hears the run and can stop or cancel it
    (`sparseseg.method.progress`); a cancelled run raises `sparseseg.method.progress.Cancelled`.
    """
    estimated = fit_estimated(image, annotation, config, progress, init)
    model, segmentation = segment_estimated(estimated, progress=progress)
    return model, estimated.train_log, segmentation
