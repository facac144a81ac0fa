"""The command line's options, each declared once, and how they become a `Config`.

Everyday options sit in the first help panel; the levers for experts in a panel of their
own. Defaults come from `Config` (and `DEVICE_DEFAULTS` for those that depend on the
device). `training_options` adds the training options to a command and hands it a
`Config` built from them. `FLAGS` maps the library's parameter names to the flags a user
types, so that error messages name the flag.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from sparseseg.config import DEVICE_DEFAULTS, Config
from sparseseg.errors import InputError

EVERYDAY = "Everyday options"
OUTPUTS = "Extra outputs"
LEVERS = "Expert levers"
LARGE = "Large volumes"

#: Library parameter -> command-line flag, where the flag is not ``--`` + the name with dashes.
FLAGS = {"ks": "--planes", "pairs": "--pair", "save_model_to": "--save-model", "authors": "--author", "out": "--output"}


def flag(param: str) -> str:
    """The command-line flag of a library parameter: ``batch_size`` -> ``--batch-size``."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def _by_device(name: str, unit: str = "") -> str:
    cpu, cuda = DEVICE_DEFAULTS[name]
    show = (lambda v: f"{v / 60:g}m") if unit == "min" else str
    return f"[default: {show(cpu)} CPU, {show(cuda)} CUDA]"


def parse_duration(text: str | None, name: str = "time_budget") -> float | None:
    """'90' -> 90.0 s, '5m' -> 300.0, '1h30m' -> 5400.0, '2.5m' -> 150.0; None stays None."""
    if text is None:
        return None
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise InputError("expected seconds or a duration such as 90, 90s, 5m, 1h30m", param=name, value=text)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_triple(text: str | None, name: str, kind=float) -> tuple | None:
    """'50,4,4' -> (50.0, 4.0, 4.0) for --spacing (or ints for --patch); None stays None."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise InputError("expected three numbers z,y,x (e.g. 50,4,4)", param=name, value=text) from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError("expected three finite numbers z,y,x greater than 0", param=name, value=text)
    return values


def optional(kind, help: str, panel: str = EVERYDAY):
    """An option of type ``kind`` that may be left out (None, no default shown), in the help panel ``panel``."""
    return Annotated[Optional[kind], typer.Option(help=help, show_default=False, rich_help_panel=panel)]


# Options shared by several commands.
Volumes = Annotated[
    list[Path],
    typer.Argument(
        metavar="VOLUME",
        help="Raw volume(s): TIFF (ZYX, or with channels), NIfTI, Zarr, OME-Zarr or HDF5 (file.h5:/dataset). Several "
        "files = channels.",
        show_default=False,
    ),
]
Output = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Dense segmentation to write: .tif, .nii.gz, .zarr, .ome.zarr, IMAGE.ome.zarr/labels/NAME or "
        "file.h5:/dataset.",
        show_default=False,
        rich_help_panel=EVERYDAY,
    ),
]
Slices = Annotated[
    Path,
    typer.Option(
        "--slices",
        "-s",
        help="Sparse labels: class ids on annotated voxels, --unlabeled elsewhere.",
        show_default=False,
        rich_help_panel=EVERYDAY,
    ),
]
Unlabeled = Annotated[int, typer.Option(help="Value of voxels nobody annotated.", rich_help_panel=EVERYDAY)]
Planes = Annotated[
    Optional[list[str]],
    typer.Option(
        metavar="AXIS=I,J",
        help="Annotated planes, e.g. z=12,40 y=64 (everything else is unlabeled).",
        show_default=False,
        rich_help_panel=EVERYDAY,
    ),
]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.", rich_help_panel=EVERYDAY)]


Probabilities = optional(Path, "Also write class probabilities (uint8 0..255, one channel per class).", OUTPUTS)
Preview = optional(Path, "Also write a PNG: three planes with the segmentation overlaid.", OUTPUTS)
WeightsOut = optional(Path, "Also write the per-voxel loss weight map (0 = unlabeled).", OUTPUTS)
SaveModel = optional(Path, "Also save the trained model in this folder.", OUTPUTS)
Sample = optional(
    list[Path], "Volume (repeat: channels) to cut the test input and cover from [default: a synthetic volume]."
)
PackageName = optional(str, "Name on bioimage.io [default: sparseseg 3D U-Net and the folder's name].")
Authors = optional(list[str], "An author's name (repeat for several).")
Overwrite = Annotated[bool, typer.Option(help="Replace earlier outputs (never an input).", rich_help_panel=EVERYDAY)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.", rich_help_panel=EVERYDAY)]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.", rich_help_panel=EVERYDAY)]
Spacing = Annotated[
    Optional[str],
    typer.Option(
        metavar="Z,Y,X",
        help="Voxel size z,y,x, e.g. 50,4,4 [default: from the file].",
        show_default=False,
        rich_help_panel=EVERYDAY,
    ),
]
Init = optional(Path, "Warm start: begin from this saved model folder.")
Workers = optional(
    int, "Segment on a local dask cluster of this many worker processes (predict: output .zarr or .ome.zarr).", LARGE
)
Scheduler = optional(str, "Segment on the dask cluster at this address, e.g. tcp://10.0.0.5:8786.", LARGE)
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Go on with the .zarr or .ome.zarr output that an interrupted run of the same command left: only the "
        "blocks it does not hold are predicted.",
        rich_help_panel=LARGE,
    ),
]
Overlap = optional(
    float,
    "Overlap of the windows across the annotated planes, 0 to below 1 [default: as trained: 0 for new models, 0.75 "
    "for models trained before sparseseg put the planes at any depth of a patch].",
    LARGE,
)
Gt = Annotated[Path, typer.Option("--gt", help="Dense ground truth of the same shape.", show_default=False)]


def _option(name, annotation, default, help, panel=LEVERS, show_default=True, flags=()):
    """One training option as a keyword-only parameter, for `training_options`."""
    info = typer.Option(*flags, help=help, show_default=show_default, rich_help_panel=panel)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, info]
    )


#: The training options of densify, train and sweep, declared once.
TRAINING = [
    inspect.Parameter("spacing", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Spacing),
    _option(
        "time_budget",
        Optional[str],
        None,
        f"Most training time: seconds or e.g. 5m {_by_device('time_budget', 'min')}.",
        EVERYDAY,
        False,
    ),
    _option(
        "time_limit",
        Optional[str],
        None,
        "Most time of the whole densify, features, forest, estimate and segmentation included: training gets what "
        "they leave (e.g. 2m; train: training only).",
        EVERYDAY,
        False,
    ),
    _option("iterations", Optional[int], None, f"Most training steps {_by_device('iterations')}.", EVERYDAY, False),
    _option("device", str, Config.device, "auto (CUDA when available), cpu or cuda.", EVERYDAY),
    _option(
        "seed",
        Optional[int],
        None,
        "Random seed; the same seed repeats a CPU run, to within floating-point rounding, when --iterations ends it.",
        EVERYDAY,
        False,
    ),
    _option(
        "base",
        Optional[int],
        None,
        f"Channels of the first layer (the paper: 32) {_by_device('base')}.",
        show_default=False,
    ),
    _option(
        "patch",
        Optional[str],
        None,
        "Largest training patch z,y,x [default: a physical cube of ~64^3 voxels].",
        show_default=False,
    ),
    _option(
        "thin", int, Config.thin, "Patch depth across annotated planes, in voxels of the finest axis (0: cube patches)."
    ),
    _option("batch_size", Optional[int], None, f"Patches per step {_by_device('batch_size')}.", show_default=False),
    _option("lr", float, Config.lr, "Initial learning rate (decays to 0)."),
    _option("dice", float, Config.dice, "Weight of a soft-Dice term added to the cross-entropy."),
    _option(
        "class_power",
        float,
        Config.class_power,
        "Class balancing: loss weight = annotated class frequency ** -power (0: equal).",
    ),
    _option(
        "prior_correction",
        float,
        Config.prior_correction,
        "At prediction, divide class probabilities by class weight ** this (0..1), taking back that part of the "
        "balancing.",
    ),
    _option(
        "augment",
        bool,
        Config.augment,
        "Augment while training: flips, rotations, scaling, gray values, elastic deformation.",
        flags=("--augment/--no-augment",),
    ),
    _option(
        "calibrate",
        bool,
        Config.calibrate,
        "After training, tune one offset per class so that the prediction fits the annotated voxels best.",
    ),
    _option(
        "holdout",
        bool,
        Config.holdout,
        "Hold out one annotated plane per axis (of those with 2+) to estimate the IoU "
        "and choose the blend and offsets there; then train on all planes.",
    ),
    _option(
        "forest",
        bool,
        Config.forest,
        "Blend the network with a random forest on filter features (ilastik's pixel "
        "classifier), weighted on the held-out planes.",
    ),
    _option(
        "filters",
        bool,
        Config.filters,
        "The network reads the forest's filter features (smoothing, edges, Hessian at 5 scales) beside the raw "
        "channels.",
    ),
]


def training_config(unlabeled: int, *, spacing, time_budget, time_limit, patch, thin, **values) -> Config:
    """A `Config` from the training options as typed (None: the default)."""
    values.update(
        spacing=parse_triple(spacing, "spacing"),
        time_budget=parse_duration(time_budget),
        time_limit=parse_duration(time_limit, "time_limit"),
        patch=parse_triple(patch, "patch", int),
    )
    return Config(unlabeled=unlabeled, thin=thin or None, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class Common:
    """The options every writing command takes: replace earlier outputs, be quiet, print JSON."""

    overwrite: bool = False
    quiet: bool = False
    as_json: bool = False

    @property
    def silent(self) -> bool:
        """No progress bar: asked to be quiet, or stdout carries JSON."""
        return self.quiet or self.as_json


#: The options of `Common`, declared once.
COMMON = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=alias)
    for name, alias in (("overwrite", Overwrite), ("quiet", Quiet), ("as_json", AsJson))
]


@dataclass(frozen=True)
class Segmenting:
    """The options of every command that segments: the extra outputs and the dask cluster."""

    probabilities: Path | None = None
    preview: Path | None = None
    workers: int | None = None
    scheduler: str | None = None


#: The options of `Segmenting`, declared once.
SEGMENTING = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=alias)
    for name, alias in (
        ("probabilities", Probabilities),
        ("preview", Preview),
        ("workers", Workers),
        ("scheduler", Scheduler),
    )
]


def add_options(*extra: inspect.Parameter, training: bool = False, segmenting: bool = False):
    """Add options to a command: `COMMON` (handed over as ``common``), ``extra``, with ``training`` `TRAINING`, and
    with ``segmenting`` `SEGMENTING` (handed over as ``segmenting``).

    A command that takes the training options declares ``config: Config`` and ``unlabeled``,
    and receives a `Config` built from `TRAINING` and ``extra``; one that does not receives
    ``extra`` as its own keyword arguments. Every command so decorated declares ``common: Common``.
    """

    def decorate(command):
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # the command's own annotations, resolved
        made = ("config", "common", "segmenting")
        own = [p.replace(annotation=hints[p.name]) for p in signature.parameters.values() if p.name not in made]
        added = (SEGMENTING if segmenting else []) + (TRAINING if training else []) + list(extra) + COMMON
        to_config = [p.name for p in TRAINING + list(extra)] if training else []

        @functools.wraps(command)
        def wrapper(**kwargs):
            kwargs["common"] = Common(**{p.name: kwargs.pop(p.name) for p in COMMON})
            if training:
                kwargs["config"] = training_config(
                    kwargs["unlabeled"], **{name: kwargs.pop(name) for name in to_config}
                )
            if segmenting:
                kwargs["segmenting"] = Segmenting(**{p.name: kwargs.pop(p.name) for p in SEGMENTING})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return wrapper

    return decorate


#: Flip test-time augmentation, an extra training option of densify (saved in the model for predict).
TTA = _option("tta", bool, Config.tta, "Average predictions over flips (8x slower inference).")
