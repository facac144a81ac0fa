"""One configuration object for training and inference, with documented defaults.

Fields left at None are chosen for the device by `Config.resolved` (CPU runs need a smaller
network and shorter training than GPU runs). A resolved config is saved as JSON beside
the weights of a model folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from sparseseg import UNLABELED
from sparseseg.errors import InputError

#: Device names: 'auto' is CUDA when available, else the CPU.
DEVICES = ("auto", "cpu", "cuda")
#: Upper bounds that keep what a user can type from allocating memory without bound.
MAX_BASE = 256
MAX_BATCH = 64
MAX_PATCH = 1024
#: Seeds are what numpy's legacy seeding and torch's generators take alike: 0..2**32 - 1.
MAX_SEED = 2**32 - 1

#: Fields added after the first model folders, with the value that means what those folders did.
ADDED = {"forest": False, "holdout": False, "wide_overlap": 0.5, "filters": False, "time_limit": None}

#: Defaults that depend on the device: (cpu, cuda).
DEVICE_DEFAULTS = {
    "base": (8, 32),
    "batch_size": (2, 4),
    "iterations": (10000, 2000),
    "time_budget": (300.0, 120.0),
}


@dataclass(frozen=True)
class Config:
    """How sparseseg trains and predicts.

    Attributes
    ----------
    base : int or None
        Channels of the first convolution (the paper: 32). Default 8 on CPU, 32 on CUDA.
    depth : int
        Resolution steps (poolings) of the U-Net (the paper: 3).
    patch : tuple of 3 int or None
        Largest training patch (z, y, x). Default: a cube in physical space of about 64^3
        voxels, no larger than the volume (64x64x64 when isotropic, 12x152x152 for a
        50x4x4 nm EM stack).
    thin : int or None
        Depth of the training patch across an annotated plane, in voxels of the finest axis
        (at least 3 voxels of the axis itself): each step trains on the planes of one axis
        with patches only this deep across them, which costs a fraction of a cube and carries
        the same labels. None: cube patches around any annotated voxel.
    batch_size : int or None
        Patches per training step. Default 2 on CPU, 4 on CUDA.
    iterations : int or None
        Largest number of training steps. Default 10000 on CPU (the time budget ends a CPU
        run first), 2000 on CUDA.
    time_budget : float or None
        Largest training time in seconds. Default 300 on CPU, 120 on CUDA.
    time_limit : float or None
        Largest wall time of a whole densify in seconds: features, forests, estimate, training and segmentation.
        Training then ends when what follows it would no longer end in time (foreseen from the forest's time and the
        training steps' pace), no fine-tuning follows the estimate, and the forest's correction and refit are made
        only where they fit (`sparseseg.method.ensemble`). None: no limit beyond ``time_budget``.
    lr : float
        Adam learning rate at the start; it decays polynomially to 0 over the run.
    class_power : float
        Class balancing: class weight = annotated frequency ** -class_power (0: equal weights).
    prior_correction : float
        At prediction, class probabilities are divided by class weight ** prior_correction
        and renormalised, which takes back that part of the balancing: a network trained
        with class weights over-predicts the rare classes it was told to weigh more. 0: off;
        1: predict as without class weights (rare classes then tend to vanish).
    calibrate : bool
        After training, tune one offset per class on the log-probabilities (on top of the
        prior correction) so that the most probable class fits the annotated voxels best
        (mean foreground IoU); the offsets are saved with the model and used by predict.
        With ``holdout`` they are fitted on the held-out planes to judge the blend weights,
        and not kept once the models are trained on all planes (`sparseseg.method.ensemble`).
    forest : bool
        Blend the network with a random forest on filter features (`sparseseg.method.forest`, the
        pixel classifier ilastik users know), with the network's weight chosen on held-out
        planes (needs ``holdout``): where the forest reads the classes from intensity better,
        it gets the larger weight, so that the result is not worse than the forest alone.
    filters : bool
        The network reads the forest's filter features (smoothed intensity, gradient magnitude and
        Hessian eigenvalues at five scales, `sparseseg.method.inputs`) beside the raw channels:
        the multiscale view a pixel classifier starts from, which the network need not learn
        from a few planes.
    holdout : bool
        Hold out one annotated plane per axis that has two or more, to estimate the IoU on
        unannotated voxels and to choose the blend on voxels the network did not train on;
        training then goes on with all planes (`sparseseg.method.ensemble`).
    dice : float
        Weight of a soft-Dice term on annotated voxels added to the cross-entropy (0: off).
    augment : bool
        Flips, rotations, scaling, gray values and elastic deformation while training (the
        paper's). Off by default: the short runs sparseseg makes (~500 steps on a CPU, 2000 on
        a GPU) learn more from the plain annotated planes; see the README's benchmark section.
    overlap : float
        Overlap of the sliding windows at inference, as a fraction of the window, across the
        annotated planes (where a window keeps the training depth). 0: the windows tile that
        axis edge to edge. Training puts the annotated plane at any depth of its thin patch,
        so a window's outer planes are predicted almost as well as its middle: on the nine
        development volumes 0 gave 0.002 less IoU than 0.5 on average (at most 0.010, ISBI's
        3-section windows) with half the windows, a third on the EM stacks; see
        docs/benchmarks.md. A model saved before (its plane always in the middle) keeps the
        overlap saved with it, 0.75.
    wide_overlap : float
        The same along the windows' other, wide axes (`sparseseg.method.planning.window_overlaps`).
        Each overlapping window there is paid for in time, and on a volume wider than one
        window this is most of the inference's cost. An eighth, not a quarter: on synthetic
        volumes two to three windows wide it changed the IoU by 0.0004 at most with one window
        fewer per axis, and a 64x2000x2000 volume takes 1.52 window voxels per voxel instead
        of 1.81; see docs/benchmarks.md. Models saved with another value keep it.
    tta : bool
        Average predictions over flips at inference (8x slower).
    spacing : tuple of 3 float or None
        Voxel size (z, y, x); decides along which axes the network pools.
    seed : int or None
        Random seed; the same seed repeats a CPU run, to within floating-point rounding, when
        ``iterations`` ends it (a time budget ends after as many steps as the clock allows).
        None: a fresh random run.
    device : str
        'auto' (CUDA when available), 'cpu' or 'cuda'.
    unlabeled : int
        Value of unannotated voxels in a sparse label volume.
    """

    base: int | None = None
    depth: int = 3
    patch: tuple[int, int, int] | None = None
    thin: int | None = 16
    batch_size: int | None = None
    iterations: int | None = None
    time_budget: float | None = None
    time_limit: float | None = None
    lr: float = 3e-3
    class_power: float = 0.5
    prior_correction: float = 0.5
    calibrate: bool = True
    forest: bool = True
    filters: bool = True
    holdout: bool = True
    dice: float = 0.0
    augment: bool = False
    overlap: float = 0.0
    wide_overlap: float = 0.125
    tta: bool = False
    spacing: tuple[float, float, float] | None = None
    seed: int | None = None
    device: str = "auto"
    unlabeled: int = UNLABELED

    def __post_init__(self):
        for name in (
            "time_budget",
            "time_limit",
            "lr",
            "class_power",
            "prior_correction",
            "dice",
            "overlap",
            "wide_overlap",
        ):
            _check_finite(name, getattr(self, name))
        if self.spacing is not None:
            _check_finite("spacing", self.spacing)
        checks = [
            (self.base is None or 1 <= self.base <= MAX_BASE, "base", f"must lie in 1..{MAX_BASE}"),
            (0 <= self.depth <= 6, "depth", "must lie in 0..6"),
            (
                self.patch is None or (len(self.patch) == 3 and 1 <= min(self.patch) and max(self.patch) <= MAX_PATCH),
                "patch",
                f"must be three sizes z,y,x in 1..{MAX_PATCH}",
            ),
            (self.thin is None or self.thin >= 1, "thin", "must be >= 1"),
            (self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH, "batch_size", f"must lie in 1..{MAX_BATCH}"),
            (self.iterations is None or self.iterations >= 0, "iterations", "must be >= 0"),
            (self.time_budget is None or self.time_budget >= 0, "time_budget", "must be >= 0 seconds"),
            (self.time_limit is None or self.time_limit > 0, "time_limit", "must be > 0 seconds"),
            (0 < self.lr <= 1, "lr", "must lie in (0, 1]"),
            (self.class_power >= 0, "class_power", "must be >= 0"),
            (0 <= self.prior_correction <= 1, "prior_correction", "must lie in [0, 1]"),
            (self.dice >= 0, "dice", "must be >= 0"),
            (0 <= self.overlap < 1, "overlap", "must lie in [0, 1)"),
            (0 <= self.wide_overlap < 1, "wide_overlap", "must lie in [0, 1)"),
            (
                self.spacing is None or (len(self.spacing) == 3 and min(self.spacing) > 0),
                "spacing",
                "must be three numbers z,y,x > 0",
            ),
            (self.seed is None or 0 <= self.seed <= MAX_SEED, "seed", f"must lie in 0..{MAX_SEED} (2**32 - 1)"),
            (self.device in DEVICES, "device", "must be " + ", ".join(DEVICES)),
            (0 <= self.unlabeled <= 65535, "unlabeled", "must lie in 0..65535"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise InputError(rule, param=name, value=getattr(self, name))

    def resolved(self, cuda: bool) -> Config:
        """A copy with the device-dependent defaults filled in."""
        values = {k: v[int(cuda)] for k, v in DEVICE_DEFAULTS.items() if getattr(self, k) is None}
        return replace(self, **values)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """The config saved by `to_dict`; an unknown, missing or mistyped field is an `InputError` naming it."""
        if not isinstance(data, dict):
            raise InputError("config: expected an object of settings")
        known = [f.name for f in fields(cls)]
        data = {**{k: v for k, v in ADDED.items() if k not in data}, **data}
        unknown = sorted(set(data) - set(known))
        missing = [name for name in known if name not in data]
        if unknown or missing:
            found = "; ".join(
                p
                for p in (
                    f"unknown field(s) {unknown}" if unknown else "",
                    f"missing field(s) {missing}" if missing else "",
                )
                if p
            )
            raise InputError(f"config: {found}")
        values = {}
        for f in fields(cls):
            value = data[f.name]
            if not _fits(value, str(f.type)):
                raise InputError(
                    f"config: field {f.name!r} must be {_KINDS_SAID[_kind(str(f.type))]}, "
                    f"found {json.dumps(value)[:40]}"
                )
            if isinstance(value, (list, tuple)):
                value = tuple(value)
            elif _kind(str(f.type)) == "int" and value is not None:
                value = int(value)
            values[f.name] = value
        return cls(**values)


def _kind(annotation: str) -> str:
    return next(k for k in ("tuple", "bool", "int", "float", "str") if k in annotation)


_KINDS_SAID = {
    "tuple": "three numbers z,y,x",
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "str": "a word",
}


def _fits(value, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``annotation`` (e.g. 'int | None')."""
    if value is None:
        return "None" in annotation
    kind = _kind(annotation)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "tuple": isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
        "bool": isinstance(value, bool),
        "int": number and float(value).is_integer(),
        "float": number,
        "str": isinstance(value, str),
    }[kind]


def _check_finite(name: str, value) -> None:
    """Refuse NaN and infinity in a number (or a tuple of numbers) of field ``name``; None passes."""
    numbers = value if isinstance(value, (tuple, list)) else (value,)
    if any(v is not None and not math.isfinite(v) for v in numbers):
        raise InputError("must be a finite number (not NaN or infinity)", param=name, value=value)
