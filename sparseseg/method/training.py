"""Training a 3D U-Net on one sparsely annotated volume.

Patches are drawn around annotated voxels (each class equally often), augmented on the
training device, and scored with a softmax cross-entropy weighted per voxel: weight 0 on
unlabeled voxels, so only annotated voxels teach the network. The learning rate decays
polynomially over the run, which ends after a number of steps or a time budget, whichever
comes first; Ctrl-C, or a `sparseseg.method.progress.Progress` that asks to stop, ends it
early and keeps the model trained so far (a cancelled one raises `Cancelled`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.errors import InputError
from sparseseg.method import augment
from sparseseg.method.annotation import Annotation, weights_from_counts
from sparseseg.method.planning import AXES, patch_shapes
from sparseseg.method.progress import Forward, Progress, as_progress, checkpoint

logger = logging.getLogger("sparseseg")


@dataclass(frozen=True)
class TrainData:
    """A normalised image with its class targets and per-voxel weights.

    image : (C, Z, Y, X) float32; target : (Z, Y, X) int, class index 0..K-1;
    weight : (Z, Y, X) float32, 0 where nothing was annotated; planes : the annotated
    planes per axis ({'z': [...], 'y': [...], 'x': [...]}), empty where the annotation is
    not plane-wise.
    """

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    planes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WholeVolume:
    """What `fit` needs of the whole volume when it is given only slabs of it (`sparseseg.large.slabs.read_stack`).

    shape: the volume's (Z, Y, X), which the training patch is planned for; stats: the (C, 4)
    normalisation statistics of `sparseseg.method.preprocess.intensity_stats` (those the block
    inference takes); classes, counts: the annotated class ids and their voxels in the volume.
    """

    shape: tuple[int, int, int]
    stats: np.ndarray
    classes: np.ndarray
    counts: np.ndarray


def per_image(whole: WholeVolume | Sequence[WholeVolume | None] | None, n: int) -> list[WholeVolume | None]:
    """`sparseseg.method.fitting.fit`'s ``whole`` as one entry per image (None: the image is a volume read whole).

    One `WholeVolume` is that of all ``n`` images (slabs of one volume); a sequence must hold one entry per image.
    """
    if whole is None or isinstance(whole, WholeVolume):
        return [whole] * n
    whole = list(whole)
    if len(whole) != n:
        raise InputError(f"need one whole-volume entry (or None) per image, got {len(whole)} for {n} images")
    return whole


def class_weights_of(
    annotations: Sequence[Annotation],
    classes: np.ndarray,
    class_power: float,
    whole: WholeVolume | Sequence[WholeVolume | None] | None = None,
) -> np.ndarray:
    """Class weights over all ``annotations`` for the network's ``classes``; the loss uses them and the model keeps
    them.

    Where ``whole`` (see `per_image`) gives an annotation a `WholeVolume`, that volume's class
    counts stand for it, once per volume however many of its slabs are given (the same object);
    the other annotations count their annotated voxels.
    """
    counts = np.zeros(len(classes), dtype=np.int64)
    counted: list[WholeVolume] = []
    for a, volume in zip(annotations, per_image(whole, len(annotations))):
        if volume is None:
            counts += np.bincount(np.searchsorted(classes, a.classes[a.target[a.mask]]), minlength=len(classes))
        elif not any(volume is c for c in counted):
            counted.append(volume)
            counts[np.searchsorted(classes, volume.classes)] += volume.counts
    return weights_from_counts(counts, class_power)


@dataclass
class TrainLog:
    iterations: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    stopped_by: str = (
        "iterations"  # 'iterations', 'time', 'interrupt' (Ctrl-C) or 'stop' (asked by the progress object)
    )
    device: str = "cpu"
    shapes: dict = field(default_factory=dict)  # training patch per annotated axis (None: cube patches)
    warnings: list[str] = field(
        default_factory=list
    )  # why the result may not be worth much (see `sparseseg.method.fitting.fit`)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-20:]
        return float(np.mean(tail)) if tail else float("nan")

    def then(self, second: TrainLog | None) -> TrainLog:
        """One log of this phase and a ``second`` that went on from it (None: this one); a stop in the first is kept."""
        if second is None:
            return self
        stopped = self.stopped_by if self.stopped_by in ("interrupt", "stop") else second.stopped_by
        return replace(
            second,
            iterations=self.iterations + second.iterations,
            seconds=self.seconds + second.seconds,
            losses=self.losses + second.losses,
            stopped_by=stopped,
            warnings=self.warnings + second.warnings,
        )


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, dice: float = 0.0) -> torch.Tensor:
    """Weighted softmax cross-entropy, plus ``dice`` times a soft-Dice loss on voxels with weight > 0.

    The cross-entropy is ``sum(w * ce) / sum(w)``; voxels with ``w = 0`` add nothing and get
    no gradient.
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, target, reduction="none")
    loss = (ce * weight).sum() / weight.sum().clamp_min(1e-8)
    if dice:
        labelled = (weight > 0).unsqueeze(1).float()
        probs = torch.softmax(logits, dim=1) * labelled
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float() * labelled
        dims = (0, 2, 3, 4)
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        present = onehot.sum(dims) > 0
        soft_dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
        loss = loss + dice * (1 - soft_dice[present].mean())
    return loss


class VolumeCrops:
    """Crops of one volume around its annotated voxels, each annotated class equally often.

    Centres are grouped by the axis of the annotated plane they lie on (key None: any
    annotated voxel). A crop drawn for an axis is weighted only on that axis's planes, which
    lie at any depth of a patch thin across them (every plane of a thin window is later used
    to predict), not on the planes of other axes that cross it out to its thin faces, which
    are seen with padding for context. Crops reach past the volume by up to ``pads`` voxels; there the image is 0
    and the weight is 0 (the targets and weights are padded once, the image, many channels deep, crop by crop).
    """

    def __init__(self, data: TrainData, largest: tuple[int, int, int], device: torch.device, by_axis: bool):
        self.pads = [c // 2 + 1 for c in largest]
        pads = [(p, p) for p in self.pads]
        self.shape = data.target.shape
        self.image = torch.from_numpy(data.image).to(device)
        self.target = torch.from_numpy(np.pad(data.target.astype(np.int64), pads)).to(device)
        labelled = data.weight > 0
        regions = {None: labelled}
        if by_axis:
            from sparseseg.method.annotation import planes_mask

            regions = {a: labelled & planes_mask({a: v}, self.shape) for a, v in data.planes.items() if v}
        self.centres, self.weights = {}, {}
        for axis, region in regions.items():
            pools = [np.flatnonzero(region & (data.target == k)) for k in np.unique(data.target[region])]
            if pools:
                self.centres[axis] = pools
                self.weights[axis] = torch.from_numpy(
                    np.pad(np.where(region, data.weight, 0).astype(np.float32), pads)
                ).to(device)

    def crop_at(self, rng: np.random.Generator, axis: str | None, crop: tuple[int, int, int]):
        pools = self.centres[axis]
        pool = pools[rng.integers(len(pools))]
        centre = np.unravel_index(pool[rng.integers(len(pool))], self.shape)
        # across the thin axis the plane lies at any depth of the crop (centre offset c // 2 - depth), so that every
        # plane of a window is learnt and windows need not overlap much there
        # (`sparseseg.method.planning.window_overlaps`)
        jitter = [
            c // 2 - rng.integers(c) if a == axis else rng.integers(-(c // 4), c // 4 + 1) for a, c in zip(AXES, crop)
        ]
        start = [
            int(np.clip(v + j + p - c // 2, 0, s + 2 * p - c))  # padded coordinates, centred on v + j
            for v, j, p, c, s in zip(centre, jitter, self.pads, crop, self.shape)
        ]
        window = tuple(slice(s, s + c) for s, c in zip(start, crop))
        return self._image_at(start, crop), self.target[window], self.weights[axis][window]

    def _image_at(self, start, crop) -> torch.Tensor:
        """The image's crop at ``start`` (in padded coordinates), 0 past the volume's faces."""
        inside = [slice(max(s - p, 0), min(s - p + c, n)) for s, c, p, n in zip(start, crop, self.pads, self.shape)]
        placed = [slice(i.start - (s - p), i.stop - (s - p)) for i, s, p in zip(inside, start, self.pads)]
        out = self.image.new_zeros((self.image.shape[0],) + tuple(crop))
        out[(slice(None),) + tuple(placed)] = self.image[(slice(None),) + tuple(inside)]
        return out


class PatchSampler:
    """Batches of crops from one or more volumes; all crops of a batch share one shape.

    Each batch is drawn around the annotated planes of one axis (chosen at random), with the
    crop shape for that axis; each volume that has planes along it is equally likely.
    """

    def __init__(self, data: Sequence[TrainData], crops: dict, device: torch.device, rng: np.random.Generator):
        largest = tuple(max(c[i] for c in crops.values()) for i in range(3))
        by_axis = None not in crops
        self.volumes = [VolumeCrops(d, largest, device, by_axis) for d in data]
        self.crops = crops
        self.axes = [a for a in crops if any(a in v.centres for v in self.volumes)]
        self.rng = rng

    def sample(self, batch: int):
        """(axis, image, target, weight) for one batch."""
        axis = self.axes[self.rng.integers(len(self.axes))]
        volumes = [v for v in self.volumes if axis in v.centres]
        crops = [
            volumes[self.rng.integers(len(volumes))].crop_at(self.rng, axis, self.crops[axis]) for _ in range(batch)
        ]
        return (axis, *(torch.stack(parts) for parts in zip(*crops)))


def crop_shapes(shapes: dict, params: augment.AugmentParams | None) -> dict:
    """The crop cut for each training patch shape: the patch and the margins its augmentation needs (``params``)."""
    return {
        a: s if params is None else tuple(p + 2 * m for p, m in zip(s, augment.margin(s, params)))
        for a, s in shapes.items()
    }


def poly_lr(base: float, progress: float, power: float = 0.9) -> float:
    """Learning rate after ``progress`` (0..1) of the run."""
    return base * (1 - min(max(progress, 0.0), 1.0)) ** power


class CtrlC(Forward):
    """A `Progress` that passes everything on to ``inner`` and asks training to stop once Ctrl-C was pressed."""

    def __init__(self, inner: Progress | None):
        super().__init__(as_progress(inner))
        self.pressed = False

    @property
    def stop_requested(self) -> bool:
        return self.pressed or self.inner.stop_requested

    def told(self, train_log: TrainLog) -> TrainLog:
        """``train_log``, saying 'interrupt' where Ctrl-C was pressed (training stopped at its request, or ended
        before)."""
        return replace(train_log, stopped_by="interrupt") if self.pressed else train_log


@contextlib.contextmanager
def ctrl_c_stops_training(progress: Progress | None) -> Iterator[CtrlC]:
    """While the block runs, the first Ctrl-C asks training to stop instead of raising; the second one quits.

    Yields a `CtrlC` progress callback (forwarding to ``progress``) to train with: its
    ``stop_requested`` turns true at the first Ctrl-C (SIGINT), so training ends before its
    next step, and what runs around the training (the forest, the estimate on held-out planes)
    finishes, giving the result of what was trained. ``pressed`` tells afterwards. A second
    Ctrl-C raises KeyboardInterrupt as usual. Outside the main thread (napari's worker), or
    where SIGINT is not Python's default handler, nothing changes.
    """
    ctrl_c = CtrlC(progress)
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield ctrl_c
        return

    def pressed(signum, frame):
        if ctrl_c.pressed:
            raise KeyboardInterrupt
        ctrl_c.pressed = True
        logger.warning(
            "Ctrl-C: training stops, and the result is made with what was trained so far (Ctrl-C again to quit)"
        )

    signal.signal(signal.SIGINT, pressed)
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class TrainPlan:
    """How `train` trains: the largest patch, the steps, the time and the loss.

    ``patch`` is the largest patch; with ``thin`` (a depth per axis), each batch is drawn around the annotated planes of
    one axis with a patch only that deep across them (see `sparseseg.method.planning.patch_shapes`). ``params``: the
    augmentation (None: none); ``anisotropy``: the voxel size relative to the finest axis, for the augmentation.
    """

    patch: tuple[int, int, int]
    batch_size: int
    iterations: int
    time_budget: float
    lr: float
    device: torch.device
    seed: int
    dice: float = 0.0
    thin: Sequence[int] | None = None
    params: augment.AugmentParams | None = augment.AugmentParams()
    anisotropy: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def stop(self, log: TrainLog, elapsed: float, progress: Progress) -> str | None:
        """Why the run ends before its next step ('iterations', 'time', 'stop'), or None; `Cancelled` where
        ``progress`` was cancelled."""
        checkpoint(progress)
        if log.iterations >= self.iterations:
            return "iterations"
        if elapsed >= self.time_budget:
            return "time"
        return "stop" if progress.stop_requested else None


def _step(model, optimizer, batch, plan: TrainPlan, generator, shape, normal: int) -> float:
    """One optimiser step on a batch (image, target, weight), augmented as planned; the loss."""
    image, target, weight = augment.apply(*batch, shape, plan.params, generator, plan.anisotropy, normal)
    image = image.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(plan.device.type, dtype=torch.bfloat16, enabled=plan.device.type == "cuda"):
        logits = model(image)
    loss = weighted_loss(logits, target, weight, plan.dice)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train(
    model: torch.nn.Module, data: TrainData | Sequence[TrainData], plan: TrainPlan, progress: Progress | None = None
) -> TrainLog:
    """Train ``model`` in place on ``data`` (one volume or several) as ``plan`` says; return what happened.

    ``progress(iteration, loss, elapsed_seconds)`` is called after each step. The run ends
    after ``plan.iterations`` steps or ``plan.time_budget`` seconds, or at Ctrl-C (KeyboardInterrupt),
    which is caught: the model keeps what it learnt so far and ``stopped_by`` says 'interrupt'.
    A ``progress`` whose ``stop_requested`` is true ends it the same way before the next
    step, with ``stopped_by`` 'stop'; a cancelled one raises `sparseseg.method.progress.Cancelled`.
    """
    progress = as_progress(progress)
    generator = torch.Generator(device=plan.device)
    generator.manual_seed(plan.seed)
    data = [data] if isinstance(data, TrainData) else list(data)
    shapes = patch_shapes(plan.patch, plan.thin, [a for a in AXES if any(d.planes.get(a) for d in data)])
    sampler = PatchSampler(data, crop_shapes(shapes, plan.params), plan.device, np.random.default_rng(plan.seed))
    model.to(plan.device, memory_format=torch.channels_last_3d).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr)
    log = TrainLog(device=str(plan.device), shapes=shapes)
    start = time.perf_counter()
    try:
        while (stopped := plan.stop(log, time.perf_counter() - start, progress)) is None:
            # the share of the run done: of the steps, or of the time once a step has run (before it, the clock's
            # microseconds would make a seeded run's first step, and so the run, differ by rounding)
            elapsed = time.perf_counter() - start if log.iterations else 0.0
            done = max(log.iterations / max(plan.iterations, 1), elapsed / plan.time_budget if elapsed else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(plan.lr, done)
            axis, *batch = sampler.sample(plan.batch_size)
            normal = 0 if axis is None else AXES.index(axis)
            value = _step(model, optimizer, batch, plan, generator, shapes[axis], normal)
            if not math.isfinite(value):
                raise FloatingPointError(f"training diverged at step {log.iterations} (loss {value}); lower --lr")
            log.iterations += 1
            log.losses.append(value)
            progress(log.iterations, value, time.perf_counter() - start)
        log.stopped_by = stopped
    except KeyboardInterrupt:
        log.stopped_by = "interrupt"
    log.seconds = time.perf_counter() - start
    model.eval()
    return log
