"""The trained model on arrays and block sources, with no files involved: `Model`, the bundle a training makes
(`sparseseg.method.fitting.fit`); `network_probabilities` and `segment_source`, which apply it with the sliding
window, blended with its forest; `decide`, which turns probabilities into labels (prior correction and fitted
offsets, then argmax), the one decision path; and `calibrate`, which fits the offsets on the annotated voxels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sparseseg.config import DEVICES, Config
from sparseseg.errors import InputError
from sparseseg.io.blocks import ArraySink, ArraySource, Sink, Source, all_or_nothing, blocks_to_write, mark_written
from sparseseg.method.annotation import Annotation
from sparseseg.method.decision import apply_offsets, fit_offsets, prior_offsets
from sparseseg.method.holdout import blend_probabilities
from sparseseg.method.inputs import NetworkInputs, raw_inputs
from sparseseg.method.network import UNet3D, count_parameters
from sparseseg.method.planning import (
    window_chunks,
)
from sparseseg.method.preprocess import source_stats
from sparseseg.method.streaming import BlockPlan, BlockProgress, Wanted, WindowSpec, plan_volume, run_blocks

log = logging.getLogger("sparseseg")


@dataclass
class Model:
    """A trained network with what is needed to apply it: its classes and its (resolved) config."""

    network: UNet3D
    classes: np.ndarray
    config: Config
    in_channels: int
    shapes: dict = field(default_factory=dict)  # training patch per annotated axis ('z', 'y', 'x'; None: cubes)
    class_weights: np.ndarray | None = None  # the loss's class weights, for the prior correction (None: not known)
    offsets: np.ndarray | None = None  # log-probability offset per class fitted by `calibrate` (None: not calibrated)
    forest: object | None = (
        None  # a `sparseseg.method.forest.Forest` whose probabilities are blended in (None: the network alone)
    )
    blend: float = 1.0  # weight of the network's probabilities in the blend; 1 - blend is the forest's
    estimate: dict | None = (
        None  # the IoU estimated on held-out planes (`sparseseg.method.holdout.Estimate.as_dict`), if made
    )
    inputs: NetworkInputs | None = None  # what the network reads (`sparseseg.method.inputs`; None: the raw channels)

    @property
    def network_inputs(self) -> NetworkInputs:
        """What the network reads: `inputs`, or the raw channels alone."""
        return self.inputs if self.inputs is not None else raw_inputs(self.in_channels)

    @property
    def decision_offsets(self) -> np.ndarray:
        """The offsets `decide` adds to the log-probabilities: fitted ones, else the prior correction, else 0."""
        if self.offsets is not None:
            return self.offsets
        if self.class_weights is not None:
            return prior_offsets(self.class_weights, self.config.prior_correction)
        return np.zeros(len(self.classes))

    @property
    def windows(self) -> dict:
        """Training patch shapes to match at inference (see `inference_windows`)."""
        return self.shapes or {None: self.config.patch}

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)


@dataclass
class Segmentation:
    """labels: (Z, Y, X) with the class values; probabilities: (K, Z, Y, X) float32 after `decide`, row k = class
    ``classes[k]``.

    windows: the sliding-window shapes, one pass each (see `inference_windows`).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    seconds: float
    windows: list[tuple[int, int, int]]


#: Where to run: a name of `sparseseg.config.DEVICES` ('auto': CUDA when available), or a `torch.device` decided
#: already (`resolve_device`), which is used as it is.
Device = str | torch.device


def resolve_device(device: Device) -> torch.device:
    """The `torch.device` to run on: 'auto' -> CUDA when available, else CPU; a `torch.device` of type cpu or cuda
    as it is. 'cuda' without a GPU, or anything else, is an `InputError`.

    The commands call it once and hand the result down; the library's entry points call it on what they are given,
    so a `torch.device` passes through unchanged."""
    if isinstance(device, torch.device):
        name = device.type
        if name not in ("cpu", "cuda"):
            raise InputError("must be a cpu or cuda torch.device", param="device", value=str(device))
    elif device in DEVICES:
        name = device
    else:
        raise InputError("must be " + ", ".join(DEVICES), param="device", value=str(device))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("no CUDA GPU is available here (use cpu or auto)", param="device", value=str(device))
    return device if isinstance(device, torch.device) else torch.device(name)


#: Voxels whose most probable class `decide` takes at once.
DECIDE_VOXELS = 2**20


def labels_dtype(classes: Sequence[int]) -> np.dtype:
    """uint8 for class ids up to 255, uint16 above."""
    return np.dtype(np.uint8) if max(classes) <= 255 else np.dtype(np.uint16)


def _check_channels(model: Model, channels: int) -> None:
    if channels != model.in_channels:
        raise InputError(f"the model takes {model.in_channels} channel(s), the volume has {channels}")


def with_overlap(model: Model, overlap: float | None) -> Model:
    """The model with its windows overlapping by ``overlap`` across the annotated planes (None: as saved).

    An `InputError` naming ``overlap`` where it does not lie in [0, 1) (`sparseseg.config.Config`).
    """
    if overlap is None:
        return model
    return replace(model, config=replace(model.config, overlap=float(overlap)))


def plan_of(model: Model, source: Source, budget: float | None = None, chunks=None, stats=None) -> BlockPlan:
    """How the model's windows cut ``source`` into blocks (`sparseseg.method.streaming.plan_volume`), overlapping as it
    says; normalised by ``stats``, else by the source's own (`sparseseg.method.preprocess.source_stats`)."""
    stats = source_stats(source) if stats is None else stats
    return plan_volume(model.network, source.shape, window_spec(model), stats, budget, chunks, model.network_inputs)


def window_spec(model: Model) -> WindowSpec:
    """The model's sliding windows and their overlaps."""
    return WindowSpec(model.windows, model.config.patch, model.config.overlap, model.config.wide_overlap)


def output_chunks(model: Model, shape) -> tuple[int, int, int]:
    """Chunks (z, y, x) for a chunked output the model fills over a (Z, Y, X) ``shape``: whole steps of its windows
    (`sparseseg.method.planning.window_chunks`), so that blocks of whole chunks need no extra window."""
    shape = tuple(int(n) for n in shape)
    spec = window_spec(model)
    return window_chunks(shape, spec.windows(shape, model.network.size_multiple), spec.overlaps())


def run_model(
    model: Model,
    source: Source,
    write,
    device: Device,
    tta: bool | None = None,
    progress: BlockProgress | None = None,
    chunks=None,
    wanted: Wanted = Wanted(),
):
    """The model's class probabilities, before `decide`, of every block of ``source`` that ``wanted`` keeps
    (`sparseseg.method.streaming.run_blocks`), handed to ``write(zyx, p)``."""
    _check_channels(model, source.shape[0])
    return run_blocks(
        model.network,
        source,
        plan_of(model, source, chunks=chunks),
        write,
        device=resolve_device(device),
        tta=model.config.tta if tta is None else tta,
        progress=progress,
        wanted=wanted,
    )


def prior_of(model: Model) -> np.ndarray:
    """The log-offsets of the model's prior correction (0 where its class weights are not known)."""
    if model.class_weights is None:
        return np.zeros(len(model.classes))
    return prior_offsets(model.class_weights, model.config.prior_correction)


def forest_part(model: Model, image, region=None, features=None) -> np.ndarray | None:
    """The model's forest's probabilities over ``region`` of ``image`` for the model's classes (None: no forest);
    ``features``: the image's (`sparseseg.method.features.volume_features`), where computed already."""
    if model.forest is None or model.blend == 1:
        return None
    from sparseseg.method.forest_apply import features_probabilities, forest_probabilities

    if features is not None:
        return features_probabilities(model.forest, features, model.classes, region)
    return forest_probabilities(model.forest, image, model.classes, region)


def mixed(model: Model, network: np.ndarray, forest: np.ndarray | None) -> np.ndarray:
    """What `decide` takes: the network's probabilities alone, or blended with the forest's (in place)."""
    if model.forest is None or model.blend == 1:
        return network
    return blend_probabilities(network, forest, model.blend, prior_of(model))


def write_decided(model: Model, labels: Sink, probabilities: Sink | None = None, source: Source | None = None):
    """``write(zyx, p)``: the labels `decide` gives for block probabilities ``p`` (and ``p`` as uint8 0..255) into the
    sinks.

    A model with a forest blends in the forest's probabilities of the block, read from
    ``source`` (the raw volume; needed then). Once both sinks are written the block is marked
    written whole in them (where they are resumable outputs).
    """
    if model.forest is not None and model.blend < 1 and source is None:
        raise InputError("the model blends in a forest, which needs the raw volume", param="source", value=None)

    def write(zyx, p):
        p = mixed(model, p, forest_part(model, source, zyx))
        labels.write(zyx, decide(model, p))
        if probabilities is not None:
            probabilities.write(zyx, np.round(p * 255).astype(np.uint8))
        mark_written(zyx, labels, probabilities)

    return write


def network_probabilities(
    model: Model,
    image: np.ndarray,
    device: Device = "auto",
    tta: bool | None = None,
    needed: np.ndarray | None = None,
    features=None,
) -> tuple[np.ndarray, list[tuple[int, int, int]], float]:
    """The network's class probabilities (K, Z, Y, X) for a raw (C, Z, Y, X) image, before `decide`.

    Returns the probabilities, the sliding windows used (one pass each, averaged) and the seconds taken.
    ``device`` is where to run (`Device`: 'auto' by default, whatever the model was trained on). With
    ``needed`` (bool, (Z, Y, X)) only the windows over those voxels are run: they get exactly
    what a run over the whole volume gives them, and the other voxels hold zeros. ``features``: the image's
    `sparseseg.method.features.VolumeFeatures`, where computed already (the image the network was trained on, whose
    normalisation they share): a network that reads filter features takes them from there.
    """
    if image.ndim != 4:
        raise InputError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    _check_channels(model, image.shape[0])
    if needed is not None and needed.shape != image.shape[1:]:
        raise InputError(f"must have the image's shape {image.shape[1:]}, got {needed.shape}", param="needed")
    start = time.perf_counter()
    sink, source = ArraySink((len(model.classes),) + image.shape[1:], np.float32), ArraySource(image)
    # an image held whole whose network reads filter features: one block, its features computed once (or given, with
    # the statistics the image was normalised by for them)
    stats = None
    if features is not None:
        from sparseseg.method.features import check_features

        check_features(features, source, "features")
        stats = features.stats
    plan = plan_of(model, source, math.inf if model.network_inputs.filters else None, stats=stats)
    if features is not None and model.network_inputs.filters:
        plan = replace(plan, features=features.values)
    windows = run_blocks(
        model.network,
        source,
        plan,
        sink.write,
        device=resolve_device(device),
        tta=model.config.tta if tta is None else tta,
        wanted=Wanted(needed=None if needed is None else needed.__getitem__),
    )
    return sink.finish(), windows, time.perf_counter() - start


def segment_source(
    model: Model,
    source: Source,
    labels: Sink,
    probabilities: Sink | None = None,
    *,
    device: Device = "auto",
    tta: bool | None = None,
    progress: BlockProgress | None = None,
) -> tuple[list[tuple[int, int, int]], float]:
    """Segment a volume of any size block by block: labels (and uint8 probabilities, 0..255) go to the sinks.

    Memory stays at one block whatever the volume (`sparseseg.method.streaming`). The sinks are
    finished at the end, or aborted if anything fails, so no output looks finished before it
    is; resumable sinks (`sparseseg.io.blocks.all_or_nothing`) are kept on Ctrl-C, and those
    taken up from an interrupted run get only the blocks they do not hold. Returns the
    sliding windows and the seconds taken.
    """
    start = time.perf_counter()
    with all_or_nothing(labels, probabilities):
        windows = run_model(
            model,
            source,
            write_decided(model, labels, probabilities, source),
            device,
            tta,
            progress,
            getattr(labels, "chunks", None),
            Wanted(todo=lambda plan: blocks_to_write(plan.blocks, plan.layout, labels, probabilities)),
        )
    return windows, time.perf_counter() - start


def decide(model: Model, probabilities: np.ndarray) -> np.ndarray:
    """The decision, in one place: apply the model's offsets to ``probabilities`` (in place), then the most probable
    class.

    The offsets are the prior correction and the calibrated offsets (`Model.decision_offsets`).
    Returns (Z, Y, X) labels holding the class values. The most probable class is taken a few
    z-planes at a time (`DECIDE_VOXELS`), so that its 8-byte indices never take more memory
    than a slab's.
    """
    apply_offsets(probabilities, model.decision_offsets)
    labels = np.empty(probabilities.shape[1:], dtype=labels_dtype(model.classes))
    plane = int(np.prod(probabilities.shape[2:]))
    step = max(1, DECIDE_VOXELS // max(plane, 1))
    for z in range(0, labels.shape[0], step):
        labels[z : z + step] = model.classes[np.argmax(probabilities[:, z : z + step], axis=0)]
    return labels


def segment(
    model: Model,
    image: np.ndarray,
    device: Device = "auto",
    tta: bool | None = None,
    *,
    network: tuple[np.ndarray, list] | None = None,
    features=None,
) -> Segmentation:
    """Apply a model to a raw (C, Z, Y, X) image with the sliding window (blended with its forest, if any), and
    `decide`.

    ``network``: the network's probabilities and windows over the image, where computed already (then it does not
    run). ``features``: the image's `sparseseg.method.features.VolumeFeatures`, where computed already, for the
    forest and a network that reads them. Where the forest alone decides (blend 0), the network does not run.
    """
    start = time.perf_counter()
    if network is None and model.forest is not None and model.blend == 0:
        network = np.zeros((len(model.classes),) + image.shape[1:], np.float32), []
    if network is None:
        network = network_probabilities(model, image, device, tta, features=features)[:2]
    probabilities = mixed(model, network[0], forest_part(model, image, features=features))
    return Segmentation(decide(model, probabilities), probabilities, time.perf_counter() - start, network[1])


def calibrate(model: Model, annotated: Sequence[np.ndarray], annotations: Sequence[Annotation]) -> Model:
    """Tune the model's class offsets on annotated voxels (`fit_offsets`).

    ``annotated[i]`` holds the (K, N_i) probabilities of `network_probabilities` (before
    `decide`) on the annotated voxels of ``annotations[i]``. Returns the model with its new
    offsets, or unchanged when ``config.calibrate`` is off.
    """
    if not model.config.calibrate:
        return model
    target = np.concatenate([np.searchsorted(model.classes, a.classes[a.target[a.mask]]) for a in annotations])
    decided = apply_offsets(np.concatenate(annotated, axis=1), model.decision_offsets)
    fitted = fit_offsets(decided, target, foreground=model.classes != 0)
    offsets = model.decision_offsets + fitted
    log.info(
        "class offsets calibrated on %d annotated voxels: %s (prior correction %s, fitted change %s)",
        target.size,
        np.round(offsets, 3).tolist(),
        np.round(model.decision_offsets, 3).tolist(),
        np.round(fitted, 2).tolist(),
    )
    return replace(model, offsets=offsets)


def segment_calibrated(
    model: Model, image: np.ndarray, annotation: Annotation, device: Device = "auto"
) -> tuple[Model, Segmentation]:
    """Segment the image the model was trained on, calibrating it on its annotation first; the model and its
    segmentation."""
    probabilities, windows, seconds = network_probabilities(model, image, device)
    model = calibrate(model, [probabilities[:, annotation.mask]], [annotation])
    return model, Segmentation(decide(model, probabilities), probabilities, seconds, windows)
