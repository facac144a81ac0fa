"""Held-out annotated planes: an honest estimate of quality, and the choices made on it (numpy only).

A user has no ground truth. Part of their annotation can stand in for it: one annotated
plane per axis that has two or more is held out of training (`held_out_planes`,
`without_planes`), the result is scored on it, and the choices that would otherwise be fitted
on the very voxels the network learnt from are made there instead: the weight of the network
against the pixel classifier and the class offsets of the decision (`choose_blend`). The
score on the held-out planes is the estimate of the IoU on the voxels nobody annotated; its
spread over the held-out planes says how far to trust it. That score judges models trained
without the held-out planes, on those few planes only; where a forest is fitted, the forest
measures what that costs, leaving out one plane at a time (`plane_correction`), and the
estimate is corrected by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparseseg.errors import InputError
from sparseseg.method.annotation import Annotation, planes_mask
from sparseseg.method.decision import apply_offsets, fit_offsets, mean_iou
from sparseseg.method.planning import AXES

#: Network weights tried by `choose_blend` (1: the network alone, 0: the forest alone).
BLENDS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
#: Most choices of held-out planes `held_out_planes` weighs against each other.
MAX_CHOICES = 256
#: An estimate below this mean foreground IoU, or with a spread over the held-out planes above `UNSTABLE`, is warned of.
LOW = 0.5
UNSTABLE = 0.15


@dataclass(frozen=True)
class Estimate:
    """What the held-out planes say.

    Attributes
    ----------
    iou : float
        Mean foreground IoU of the chosen decision on the held-out planes: the estimate of the
        IoU on unannotated voxels.
    spread : float
        Standard deviation of that IoU over the held-out planes (NaN with one plane).
    per_plane : dict
        IoU per held-out plane, keyed 'z=12'.
    blend : float
        Weight of the network's probabilities chosen (1 - blend is the forest's).
    offsets : ndarray
        Class offsets fitted on the held-out voxels for the chosen blend.
    network_iou, forest_iou : float
        The network alone and the forest alone, each with its own fitted offsets (NaN: no forest).
    planes : dict
        The held-out planes per axis.
    correction : float
        Added to the held-out planes' score to make ``iou`` (`plane_correction`); 0 where none was made.
    """

    iou: float
    spread: float
    per_plane: dict
    blend: float
    offsets: np.ndarray
    network_iou: float
    forest_iou: float
    planes: dict = field(default_factory=dict)
    correction: float = 0.0

    @property
    def held_out_iou(self) -> float:
        """The held-out planes' score itself, before the correction."""
        return self.iou - self.correction

    @property
    def warnings(self) -> list[str]:
        """Why the estimate says the result may not be worth much."""
        said = []
        if not self.iou >= LOW:
            said.append(
                f"the estimated IoU is low ({self.iou:.2f}{self._source}): annotate more planes, "
                "or planes where the result is wrong"
            )
        if self.spread > UNSTABLE:
            said.append(
                f"the estimate is unstable (it varies by {self.spread:.2f} between the held-out planes): "
                "the quality differs across the volume"
            )
        return said

    @property
    def _source(self) -> str:
        """Where ``iou`` comes from, as the warnings say it."""
        if self.correction:
            return f"; {self.held_out_iou:.2f} on the held-out planes, corrected by {self.correction:+.2f}"
        return " on the held-out planes"

    def as_dict(self) -> dict:
        return {
            "iou": _number(self.iou),
            "held_out_iou": _number(self.held_out_iou),
            "correction": _number(self.correction),
            "spread": _number(self.spread),
            "per_plane": {k: _number(v) for k, v in self.per_plane.items()},
            "blend": float(self.blend),
            "network_iou": _number(self.network_iou),
            "forest_iou": _number(self.forest_iou),
            "held_out_planes": {a: list(v) for a, v in self.planes.items() if v},
        }


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def held_out_planes(planes: dict, rng: np.random.Generator, present: dict | None = None) -> dict:
    """One plane of each axis with at least two annotated planes, drawn with ``rng``; {} where no axis has two.

    With ``present`` the draw keeps as many classes as it can on both sides: among the
    choices of one plane per axis (at most `MAX_CHOICES` of them, drawn), one is drawn from
    those whose held-out planes and kept planes both hold the most classes. A class seen only
    on the held-out planes would not be learnt before the estimate, and one seen only on the
    kept planes would not be estimated.

    Parameters
    ----------
    planes : dict
        Annotated planes per axis ({'z': [...], 'y': [...], 'x': [...]}), as `Annotation.planes`.
    rng : numpy.random.Generator
        Draws the planes (seed it for a repeatable run).
    present : dict, optional
        The classes annotated on each plane, keyed (axis, index), e.g. from `classes_on_planes`.
    """
    unknown = sorted(set(planes) - set(AXES))
    if unknown:
        raise InputError("axes must be z, y or x", param="planes", value=unknown)
    axes = [a for a in AXES if len(planes.get(a, [])) >= 2]
    if not axes:
        return {}
    options = [sorted(planes[a]) for a in axes]
    count = int(np.prod([len(o) for o in options]))
    if count <= MAX_CHOICES:
        choices = [
            tuple(int(v) for v in c) for c in np.stack(np.meshgrid(*options, indexing="ij"), -1).reshape(-1, len(axes))
        ]
    else:
        choices = [tuple(int(rng.choice(o)) for o in options) for _ in range(MAX_CHOICES)]
    if present is not None:
        every = [(a, i) for a in AXES for i in planes.get(a, [])]

        def covered(choice) -> int:
            held = set(zip(axes, choice))
            inside = set().union(*(present.get(p, set()) for p in held))
            outside = set().union(*(present.get(p, set()) for p in every if p not in held))
            return len(inside & outside)

        scores = [covered(c) for c in choices]
        choices = [c for c, v in zip(choices, scores) if v == max(scores)]
    choice = choices[int(rng.integers(len(choices)))]
    return {a: [i] for a, i in zip(axes, choice)}


def classes_on_planes(annotation) -> dict:
    """The class indices annotated on each annotated plane of an `Annotation` or a
    `sparseseg.method.plane_annotation.PlaneAnnotation`, keyed (axis, index)."""
    found = {}
    for axis, indices in annotation.planes.items():
        for index in indices:
            target, mask = annotation.plane(axis, index)
            found[(axis, index)] = set(np.unique(target[mask]).tolist())
    return found


def without_planes(annotation: Annotation, held: dict) -> Annotation:
    """The annotation with the ``held`` planes removed: their voxels are unannotated, their planes unlisted.

    The classes stay those of the whole annotation, so that the network keeps one output per class.
    """
    if not annotation.has_planes(held):
        raise InputError("must name annotated planes", param="held", value=held)
    mask = annotation.mask & ~planes_mask(held, annotation.mask.shape)
    planes = {a: [i for i in v if i not in held.get(a, [])] for a, v in annotation.planes.items()}
    return Annotation(annotation.classes, np.where(mask, annotation.target, 0), mask, planes)


def _decided_iou(probabilities: np.ndarray, target: np.ndarray, foreground: np.ndarray, offsets: np.ndarray) -> float:
    decided = np.argmax(np.log(np.maximum(probabilities, 1e-12)) + offsets[:, None], axis=0)
    return mean_iou(decided, target, len(foreground), foreground)


def _fitted(
    probabilities: np.ndarray, target: np.ndarray, foreground: np.ndarray, fit: bool
) -> tuple[np.ndarray, float]:
    offsets = fit_offsets(probabilities, target, foreground) if fit else np.zeros(len(foreground))
    return offsets, _decided_iou(probabilities, target, foreground, offsets)


def choose_blend(
    network: np.ndarray,
    forest: np.ndarray | None,
    target: np.ndarray,
    plane: np.ndarray,
    foreground: np.ndarray,
    names: list[str] | None = None,
    fit: bool = True,
) -> Estimate:
    """Choose the network's weight against the forest and the class offsets on held-out voxels, and estimate the IoU.

    For each weight in `BLENDS` the blend ``w * network + (1 - w) * forest`` gets the class
    offsets that make its argmax best on these voxels (`sparseseg.method.decision.fit_offsets`);
    the weight with the best mean foreground IoU is kept (the network's on a tie).

    Parameters
    ----------
    network : ndarray, (K, N)
        The network's class probabilities on N held-out annotated voxels (its prior correction applied).
    forest : ndarray, (K, N) or None
        The forest's, on the same voxels; None: the network alone.
    target : ndarray of int, (N,)
        Their annotated classes, 0..K-1.
    plane : ndarray of int, (N,)
        Which held-out plane each voxel lies on (0..P-1), for the spread.
    foreground : ndarray of bool, (K,)
        Classes whose IoU is averaged (all but the background).
    names : list of str, optional
        A name per plane ('z=12'); default 'plane 0', ...
    fit : bool
        Fit the class offsets (False: offsets 0, the blend alone is chosen).
    """
    if network.ndim != 2 or network.shape[1] == 0:
        raise InputError("must be (K, N) probabilities of N >= 1 voxels", param="network", value=network.shape)
    if forest is not None and forest.shape != network.shape:
        raise InputError(f"must have the network's shape {network.shape}", param="forest", value=forest.shape)
    if target.shape != network.shape[1:] or plane.shape != network.shape[1:]:
        raise InputError(
            f"must hold one value per voxel ({network.shape[1]})", param="target", value=(target.shape, plane.shape)
        )
    n_planes = int(plane.max()) + 1
    names = names or [f"plane {i}" for i in range(n_planes)]
    if len(names) != n_planes:
        raise InputError(f"must name each of the {n_planes} planes", param="names", value=names)
    trials = {}
    for w in BLENDS[::-1] if forest is not None else (1.0,):
        mixed = network if w == 1 else w * network + (1 - w) * forest
        trials[float(w)] = (mixed, *_fitted(mixed, target, foreground, fit))
    blend = max(trials, key=lambda w: (np.nan_to_num(trials[w][2], nan=-1.0), w))
    mixed, offsets, iou = trials[blend]
    per_plane = {
        names[i]: _decided_iou(mixed[:, plane == i], target[plane == i], foreground, offsets) for i in range(n_planes)
    }
    values = [v for v in per_plane.values() if not np.isnan(v)]
    spread = float(np.std(values)) if len(values) >= 2 else float("nan")
    forest_iou = trials[0.0][2] if forest is not None else float("nan")
    return Estimate(iou, spread, per_plane, blend, offsets, trials[1.0][2], forest_iou)


def plane_correction(
    held: tuple[np.ndarray, np.ndarray],
    each: list[tuple[np.ndarray, np.ndarray]],
    foreground: np.ndarray,
    fit: bool = True,
) -> float:
    """How far the held-out planes' score falls short of the IoU of models trained on every plane, as a forest sees it.

    The held-out planes judge models trained on the other planes only, and judge them on a few
    planes: the score errs low by what the rest of the annotation would have taught them, and
    up or down with the planes that happened to be held out. A forest is fitted in seconds, so
    it can measure both (`sparseseg.method.forest.plane_folds`): once fitted without the held-out
    planes and scored on them, as the network was, and once per annotated plane, fitted
    without that plane alone and scored on it, every plane in turn. The second score, over all
    planes, less the first is the correction added to the estimate. On the development
    benchmark it brought the estimate within 0.05 of the truth on more of the volumes than
    the held-out score alone (docs/benchmarks.md).

    Parameters
    ----------
    held : (ndarray (K, N), ndarray of int (N,))
        The forest's probabilities on the held-out planes' voxels, fitted without them, and their classes 0..K-1.
    each : list of (ndarray (K, M), ndarray of int (M,))
        Likewise for each annotated plane, fitted without that plane; scored together.
    foreground : ndarray of bool, (K,)
        Classes whose IoU is averaged.
    fit : bool
        Score each with the class offsets that suit it best (`sparseseg.method.decision.fit_offsets`), as the estimate
        is.

    Returns
    -------
    float
        The correction; 0 where either score is undefined (no foreground class on the voxels).
    """
    if not each:
        raise InputError("must hold at least one plane's probabilities", param="each", value=0)
    for name, (p, t) in [("held", held)] + [("each", pair) for pair in each]:
        if p.ndim != 2 or p.shape[0] != len(foreground) or t.shape != p.shape[1:]:
            raise InputError(
                f"must be (K, N) probabilities of K = {len(foreground)} classes with the N voxels' classes",
                param=name,
                value=(p.shape, t.shape),
            )
    _, first = _fitted(*held, foreground, fit)
    _, every = _fitted(
        np.concatenate([p for p, _ in each], axis=1), np.concatenate([t for _, t in each]), foreground, fit
    )
    correction = every - first
    return 0.0 if np.isnan(correction) else float(correction)


def blend_probabilities(network: np.ndarray, forest: np.ndarray | None, blend: float, prior: np.ndarray) -> np.ndarray:
    """``blend * network + (1 - blend) * forest``, the network's probabilities first corrected by ``prior`` (in place).

    Parameters
    ----------
    network : ndarray, (K, ...)
        The network's class probabilities; changed in place.
    forest : ndarray, (K, ...) or None
        The forest's (None, or ``blend`` 1: the network alone).
    blend : float
        The network's weight, 0..1.
    prior : ndarray, (K,)
        Log-offsets of the network's prior correction (`sparseseg.method.decision.prior_offsets`).
    """
    if not 0 <= blend <= 1:
        raise InputError("must lie in [0, 1]", param="blend", value=blend)
    apply_offsets(network, prior)
    if forest is None or blend == 1:
        return network
    network *= np.float32(blend)
    network += np.float32(1 - blend) * forest
    return network
