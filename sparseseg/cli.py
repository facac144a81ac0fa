"""The `sparseseg` command line: thin commands over `sparseseg.pipeline`.

Each command parses its options, builds a `Config`, calls one library function and prints
a summary. Results go to stdout (with --json: one JSON object); progress and messages go
to stderr. Exit codes: 0 ok, 2 bad input (a one-line message naming the file and the
problem), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sparseseg import __version__
from sparseseg.config import Config, parse_duration, parse_triple
from sparseseg.errors import InputError

app = typer.Typer(
    help="Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


def handle_errors(command):
    """Turn errors into one line on stderr and an exit code: the one place where this happens."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            err.print(f"error: {exc}", style="red", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            err.print("interrupted (no output is left half-written)", style="red")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("SPARSESEG_DEBUG"):
                raise
            err.print(f"internal error: {type(exc).__name__}: {exc} (SPARSESEG_DEBUG=1 shows the traceback)",
                      style="red", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _setup_output(quiet: bool) -> None:
    """Log messages to stderr (warnings only when ``quiet``); tables on stdout whole when it is not a terminal."""
    logger = logging.getLogger("sparseseg")
    logger.handlers[:] = [RichHandler(console=err, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # into a file or pipe: whole tables, not cut to 80 columns with ellipses


class TrainingProgress:
    """A rich progress bar on stderr showing step, loss, elapsed time and the time budget.

    The bar fills with whichever limit is nearer: the steps or the time budget. It appears
    at the first training step, so errors found while reading the input are not preceded by
    an empty bar.
    """

    def __init__(self, config: Config, quiet: bool, label: str = "training"):
        from sparseseg.pipeline import resolve_device

        shown = config.resolved(resolve_device(config.device).type == "cuda")
        self.budget = shown.time_budget
        self.iterations = shown.iterations
        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            TextColumn("step {task.fields[step]}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TextColumn(f"of {self.budget:.0f} s / {self.iterations} steps"),
            console=err,
            disable=quiet,
        )
        self.task = self.bar.add_task(label, total=1.0, step=0, loss=float("nan"))
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.bar.stop()
            self.started = False
        return False

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        if not self.started:
            self.bar.start()
            self.started = True
        done = max(iteration / max(self.iterations, 1), elapsed / self.budget if self.budget else 1.0)
        self.bar.update(self.task, completed=min(done, 1.0), step=iteration, loss=loss)


def _finite(value):
    """NaN and infinities become None, so that --json output is strict JSON."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _print_json(obj) -> None:
    """One JSON object on stdout."""
    typer.echo(json.dumps(_finite(obj), allow_nan=False))


def _summary(summary: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        _print_json(summary)
    elif not quiet:
        table = Table(show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in summary.items():
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        out.print(table)


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


# Options shared by several commands.
Volumes = Annotated[list[Path], typer.Argument(help="Raw volume(s): 3D TIFF (ZYX), 4D TIFF with channels, or NIfTI. Several files = channels.", show_default=False)]
Output = Annotated[Path, typer.Option("--output", "-o", help="Dense segmentation to write (.tif, .tiff, .nii, .nii.gz).", show_default=False)]
Unlabeled = Annotated[int, typer.Option(help="Value of voxels nobody annotated.")]
Planes = Annotated[Optional[list[str]], typer.Option(help="Annotated planes, e.g. z=12,40 y=64 (everything else is unlabeled).", show_default=False)]
Spacing = Annotated[Optional[str], typer.Option(help="Voxel size z,y,x, e.g. 50,4,4 \\[default: from the file].", show_default=False)]
Iterations = Annotated[Optional[int], typer.Option(help="Most training steps \\[default: 10000 CPU, 2000 CUDA].", show_default=False)]
TimeBudget = Annotated[Optional[str], typer.Option(help="Most training time: seconds or e.g. 5m \\[default: 5m CPU, 2m CUDA].", show_default=False)]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed; the same seed repeats a CPU run exactly when --iterations ends it.", show_default=False)]
Base = Annotated[Optional[int], typer.Option(help="Channels of the first layer (the paper: 32) \\[default: 8 CPU, 32 CUDA].", show_default=False)]
Patch = Annotated[Optional[str], typer.Option(help="Largest training patch z,y,x \\[default: a physical cube of ~64^3 voxels].", show_default=False)]
Thin = Annotated[int, typer.Option(help="Patch depth across annotated planes, in voxels of the finest axis (0: cube patches).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Patches per step \\[default: 2 CPU, 4 CUDA].", show_default=False)]
Lr = Annotated[float, typer.Option(help="Initial learning rate (decays to 0).")]
Dice = Annotated[float, typer.Option(help="Weight of a soft-Dice term added to the cross-entropy.")]
ClassPower = Annotated[float, typer.Option(help="Class balancing: loss weight = annotated class frequency ** -power (0: equal).")]
PriorCorrection = Annotated[float, typer.Option(
    help="At prediction, divide class probabilities by class weight ** this (0..1), taking back that part of the balancing.")]
Augment = Annotated[bool, typer.Option("--augment/--no-augment", help="Augment while training: flips, rotations, scaling, gray values, elastic deformation.")]
Calibrate = Annotated[bool, typer.Option(help="After training, tune one offset per class so that the prediction fits the annotated voxels best.")]
Tta = Annotated[bool, typer.Option(help="Average predictions over flips (8x slower inference).")]
Probabilities = Annotated[Optional[Path], typer.Option(help="Also write class probabilities (uint8 0..255, one channel per class).", show_default=False)]
Preview = Annotated[Optional[Path], typer.Option(help="Also write a PNG: three planes with the segmentation overlaid.", show_default=False)]
Overwrite = Annotated[bool, typer.Option(help="Replace existing output files.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
Init = Annotated[Optional[Path], typer.Option(help="Warm start: begin from this saved model folder.", show_default=False)]


def _training_config(*, spacing, time_budget, patch, thin, **values) -> Config:
    values.update(spacing=parse_triple(spacing, "spacing"), time_budget=parse_duration(time_budget),
                  patch=parse_triple(patch, "patch", int))
    return Config(thin=thin or None, **{k: v for k, v in values.items() if v is not None})


PLANE_ARG = re.compile(r"^[zyxZYX]=[\d,]+$")


def _split_planes(volumes: list[Path], planes: list[str] | None) -> tuple[list[Path], list[str] | None]:
    """Accept `--planes z=12,40 y=64`: the shell hands 'y=64' over as a volume argument."""
    extra = [str(v) for v in volumes if PLANE_ARG.match(str(v))]
    if extra and not planes:
        raise InputError(f"{extra[0]}: looks like a plane, but no --planes option was given")
    kept = [v for v in volumes if not PLANE_ARG.match(str(v))]
    return kept, ((planes or []) + extra) or None


def _train_summary(model, train_log) -> dict:
    return {
        "classes": model.classes.tolist(),
        "device": train_log.device,
        "iterations": train_log.iterations,
        "stopped_by": train_log.stopped_by,
        "final_loss": round(train_log.final_loss, 5),
        "seconds_train": round(train_log.seconds, 2),
        "patch": list(model.config.patch),
        "parameters": model.parameters,
        "seed": model.config.seed,
        "class_offsets": None if model.offsets is None else [round(float(v), 3) for v in model.offsets],
    }


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg densify volume.tif --slices labels.tif -o seg.tif\n\n"
        "  sparseseg densify flair.nii.gz t1c.nii.gz --slices sparse.nii.gz -o seg.nii.gz --time-budget 5m\n\n"
        "  sparseseg densify em.tif --slices painted.tif --planes z=3,15,27 --spacing 50,4,4 -o seg.tif\n\n"
        "  sparseseg densify vol.tif --slices more.tif -o seg2.tif --init model1 --save-model model2"
    )
)
@handle_errors
def densify(
    volumes: Volumes,
    slices: Annotated[Path, typer.Option("--slices", "-s", help="Sparse labels: class ids on annotated voxels, --unlabeled elsewhere.", show_default=False)],
    output: Output,
    unlabeled: Unlabeled = 255,
    planes: Planes = None,
    spacing: Spacing = None,
    iterations: Iterations = None,
    time_budget: TimeBudget = None,
    device: Device = "auto",
    seed: Seed = None,
    base: Base = None,
    patch: Patch = None,
    thin: Thin = Config.thin,
    batch_size: BatchSize = None,
    lr: Lr = Config.lr,
    dice: Dice = Config.dice,
    class_power: ClassPower = Config.class_power,
    prior_correction: PriorCorrection = Config.prior_correction,
    augment: Augment = False,
    calibrate: Calibrate = True,
    tta: Tta = False,
    weights_out: Annotated[Optional[Path], typer.Option(help="Also write the per-voxel loss weight map (0 = unlabeled).", show_default=False)] = None,
    probabilities: Probabilities = None,
    preview: Preview = None,
    save_model: Annotated[Optional[Path], typer.Option(help="Also save the trained model in this folder.", show_default=False)] = None,
    init: Init = None,
    partial: Annotated[bool, typer.Option(help="On Ctrl-C, still segment with the model trained so far.")] = True,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train a 3D U-Net on a few annotated planes and segment the whole volume."""
    from sparseseg import pipeline

    _setup_output(quiet)
    volumes, planes = _split_planes(volumes, planes)
    config = _training_config(
        unlabeled=unlabeled, spacing=spacing, iterations=iterations, time_budget=time_budget, device=device,
        seed=seed, base=base, patch=patch, thin=thin, batch_size=batch_size, lr=lr, dice=dice, class_power=class_power, prior_correction=prior_correction, calibrate=calibrate, augment=augment, tta=tta,
    )
    with TrainingProgress(config, quiet or as_json) as progress:
        report = pipeline.densify(
            volumes, slices, output, config, planes=planes, weights_out=weights_out,
            outputs=pipeline.Outputs(probabilities, preview, overwrite), save_model_to=save_model, init=init,
            partial=partial, progress=progress,
        )
    summary = {"output": [str(p) for p in report.written], "annotation": report.how}
    summary.update(_train_summary(report.model, report.train_log))
    summary["seconds_infer"] = round(report.segmentation.seconds, 2)
    _summary(summary, as_json, quiet)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg train --pair a.tif:a_sparse.tif --pair b.tif:b_sparse.tif -o kidney_model\n\n"
        "  sparseseg train --pair flair1.nii.gz,t1c1.nii.gz:sparse1.nii.gz -o brats_model --time-budget 20m"
    )
)
@handle_errors
def train(
    pair: Annotated[list[str], typer.Option(help="VOLUME[,VOLUME...]:LABELS, one per sparsely annotated volume (repeat).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.", show_default=False)],
    unlabeled: Unlabeled = 255,
    spacing: Spacing = None,
    iterations: Iterations = None,
    time_budget: TimeBudget = None,
    device: Device = "auto",
    seed: Seed = None,
    base: Base = None,
    patch: Patch = None,
    thin: Thin = Config.thin,
    batch_size: BatchSize = None,
    lr: Lr = Config.lr,
    dice: Dice = Config.dice,
    class_power: ClassPower = Config.class_power,
    prior_correction: PriorCorrection = Config.prior_correction,
    augment: Augment = False,
    calibrate: Calibrate = True,
    init: Init = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train one model on several sparsely annotated volumes and save it as a model folder."""
    from sparseseg import pipeline

    _setup_output(quiet)
    config = _training_config(
        unlabeled=unlabeled, spacing=spacing, iterations=iterations, time_budget=time_budget, device=device,
        seed=seed, base=base, patch=patch, thin=thin, batch_size=batch_size, lr=lr, dice=dice, class_power=class_power, prior_correction=prior_correction, calibrate=calibrate, augment=augment,
    )
    with TrainingProgress(config, quiet or as_json) as progress:
        model, train_log, folder = pipeline.train_files(pair, output, config, overwrite=overwrite, init=init, progress=progress)
    _summary({"model": str(folder), **_train_summary(model, train_log)}, as_json, quiet)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg predict kidney_model new_volume.tif -o new_seg.tif --preview new_seg.png\n\n"
        "  sparseseg predict brats_model flair.nii.gz t1c.nii.gz -o seg.nii.gz --json"
    )
)
@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="Model folder (from densify --save-model or train).", show_default=False)],
    volumes: Volumes,
    output: Output,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda \\[default: auto].", show_default=False)] = None,
    tta: Annotated[Optional[bool], typer.Option(help="Average predictions over flips (8x slower).", show_default=False)] = None,
    probabilities: Probabilities = None,
    preview: Preview = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Apply a saved model to a new volume (the fully automatic setting)."""
    from sparseseg import pipeline

    _setup_output(quiet)
    if device is not None:
        Config(device=device)  # validates the name
    trained, segmentation, written = pipeline.predict(
        model, volumes, output, outputs=pipeline.Outputs(probabilities, preview, overwrite), device=device, tta=tta
    )
    summary = {"output": [str(p) for p in written], "classes": trained.classes.tolist(),
               "seconds_infer": round(segmentation.seconds, 2), "windows": [list(w) for w in segmentation.windows]}
    _summary(summary, as_json, quiet)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg densify vol.tif --slices sparse.tif -o seg.tif --save-model m --probabilities p.tif\n\n"
        "  sparseseg suggest vol.tif --probabilities p.tif --slices sparse.tif --top 3\n\n"
        "  sparseseg suggest vol.tif --model m --slices sparse.tif --json"
    )
)
@handle_errors
def suggest(
    volumes: Volumes,
    model: Annotated[Optional[Path], typer.Option(help="Model folder to predict with.", show_default=False)] = None,
    probabilities: Annotated[Optional[Path], typer.Option(help="Probabilities from densify/predict --probabilities (no prediction needed).", show_default=False)] = None,
    slices: Annotated[Optional[Path], typer.Option("--slices", "-s", help="Sparse labels: their annotated planes are not suggested.", show_default=False)] = None,
    unlabeled: Unlabeled = 255,
    top: Annotated[int, typer.Option(help="How many planes to suggest.")] = 5,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda \\[default: auto].", show_default=False)] = None,
    as_json: AsJson = False,
) -> None:
    """Suggest which planes to annotate next: the ones where the model is least sure."""
    from sparseseg import pipeline

    suggestions = pipeline.suggest(volumes, model=model, probabilities=probabilities, slices=slices,
                                   unlabeled=unlabeled, top=top, device=device)
    if as_json:
        _print_json({"suggestions": [vars(s) for s in suggestions]})
        return
    table = Table(title="planes to annotate next (most uncertain first)")
    for column in ("rank", "axis", "plane", "uncertainty"):
        table.add_column(column, justify="right")
    for rank, s in enumerate(suggestions, 1):
        table.add_row(str(rank), s.axis, str(s.index), f"{s.uncertainty:.4f}")
    out.print(table)
    if suggestions:
        best = suggestions[0]
        err.print(f"annotate e.g. {best.axis}={best.index}, then densify again with --init to start from your model")


@app.command(
    name="preview",
    epilog=(
        "Examples:\n\n"
        "  sparseseg preview volume.tif sparse.tif -o sparse.png\n\n"
        "  sparseseg preview volume.tif seg.tif -o seg.png --centre 12,64,64"
    ),
)
@handle_errors
def preview_(
    volume: Annotated[Path, typer.Argument(help="Raw volume.", show_default=False)],
    labels: Annotated[Optional[Path], typer.Argument(help="Labels to overlay (sparse or dense).", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.", show_default=False)] = Path("preview.png"),
    centre: Annotated[Optional[str], typer.Option(help="Plane indices z,y,x to show \\[default: the centre].", show_default=False)] = None,
    planes: Planes = None,
    unlabeled: Unlabeled = 255,
    overwrite: Overwrite = False,
) -> None:
    """Write a PNG of three orthogonal planes with labels as a coloured overlay; annotated planes are marked."""
    from sparseseg import pipeline

    where = None
    if centre is not None:
        try:
            where = tuple(int(v) for v in centre.split(","))
        except ValueError:
            raise InputError(f"--centre {centre!r}: expected three plane indices z,y,x") from None
        if len(where) != 3:
            raise InputError(f"--centre {centre!r}: expected three plane indices z,y,x")
    path = pipeline.preview([volume], labels, output, centre=where, planes=planes, unlabeled=unlabeled, overwrite=overwrite)
    out.print(f"wrote {path}")


def _sweep_table(title: str, header: list[str], lines: list[list[str]]) -> Table:
    short = {"planes_per_axis": "planes", "annotated_fraction": "annotated", "seconds": "s", "mean_fg_iou": "mean fg",
             "mean_fg_iou_min": "lowest", "mean_fg_iou_max": "highest"}
    table = Table(title=title)
    for column in header:
        table.add_column(short.get(column, column.replace("iou_", "class ")), justify="right", no_wrap=True)
    for line in lines:
        table.add_row(*line)
    return table


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg sweep volume.tif --gt truth.tif --planes 1,2,4 -o sweep_report\n\n"
        "  sparseseg sweep em.tif --gt truth.tif --planes 1,3,6 --axes z --spacing 50,4,4 --time-budget 3m\n\n"
        "  sparseseg sweep flair.tif t1c.tif --gt truth.tif --planes 1,2,4 --repeats 3 --seed 0 -o report\n\n"
        "  sparseseg sweep flair.tif t1c.tif --gt truth.tif --planes 1,2,4 --repeats 3 --stagger -o report"
    )
)
@handle_errors
def sweep(
    volumes: Volumes,
    gt: Annotated[Path, typer.Option("--gt", help="Dense ground truth of the same shape.", show_default=False)],
    planes: Annotated[str, typer.Option(help="Numbers of evenly spaced annotated planes per axis to try.")] = "1,2,4",
    axes: Annotated[str, typer.Option(help="Axes whose planes are annotated: zyx, z, ...")] = "zyx",
    repeats: Annotated[int, typer.Option(help="Training runs per plane count (seeds --seed, --seed + 1, ...); the report gives each run and their mean.")] = 1,
    stagger: Annotated[bool, typer.Option("--stagger", help="Shift the planes by (run + 0.5) / repeats of their spacing in each run, so that the runs of every plane count annotate all parts of the volume equally often.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Report folder: sweep.csv, sweep.json, sweep.png.", show_default=False)] = None,
    unlabeled: Unlabeled = 255,
    spacing: Spacing = None,
    iterations: Iterations = None,
    time_budget: TimeBudget = None,
    device: Device = "auto",
    seed: Seed = None,
    base: Base = None,
    patch: Patch = None,
    thin: Thin = Config.thin,
    batch_size: BatchSize = None,
    lr: Lr = Config.lr,
    dice: Dice = Config.dice,
    class_power: ClassPower = Config.class_power,
    prior_correction: PriorCorrection = Config.prior_correction,
    augment: Augment = False,
    calibrate: Calibrate = True,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """How many planes are worth annotating: simulate k annotated planes per axis, densify, score the rest."""
    from sparseseg import pipeline

    _setup_output(quiet)
    try:
        ks = [int(v) for v in planes.split(",")]
    except ValueError:
        raise InputError(f"--planes {planes!r}: expected plane counts such as 1,2,4") from None
    config = _training_config(
        unlabeled=unlabeled, spacing=spacing, iterations=iterations, time_budget=time_budget, device=device,
        seed=seed, base=base, patch=patch, thin=thin, batch_size=batch_size, lr=lr, dice=dice, class_power=class_power, prior_correction=prior_correction, calibrate=calibrate, augment=augment,
    )
    bars = {(k, r): TrainingProgress(config, quiet or as_json, label=f"k={k}" + (f" run {r + 1}" if repeats > 1 else ""))
            for k in ks for r in range(repeats)}
    try:
        rows, written = pipeline.sweep(volumes, gt, ks, axes.lower(), config, report=output, overwrite=overwrite,
                                       progress_for=lambda k, r: bars.get((k, r)), repeats=repeats, stagger=stagger)
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
    header, body = pipeline.sweep_table(rows)
    mean_header, means = pipeline.sweep_means(rows)
    if as_json:
        _print_json({"rows": [dict(zip(header, line)) for line in body],
                     "means": [dict(zip(mean_header, line)) for line in means], "written": [str(p) for p in written]})
        return
    runs = [[str(k), str(seed), f"{fraction:.2%}", f"{seconds:.0f}", *map(_fmt, iou)] for k, seed, fraction, seconds, *iou in body]
    out.print(_sweep_table("IoU on unannotated voxels against annotated planes per axis", header, runs))
    if repeats > 1:
        means = [[str(k), str(n), *map(_fmt, iou)] for k, n, *iou in means]
        out.print(_sweep_table(f"Mean over {repeats} runs per plane count", mean_header, means))
    for path in written:
        err.print(f"wrote {path}")


@app.command(
    name="eval",
    epilog=(
        "Examples:\n\n"
        "  sparseseg eval seg.tif --gt truth.tif\n\n"
        "  sparseseg eval seg.tif --gt truth.tif --ignore sparse.tif --json"
    ),
)
@handle_errors
def eval_(
    prediction: Annotated[Path, typer.Argument(help="Segmentation to score.", show_default=False)],
    gt: Annotated[Path, typer.Option("--gt", help="Dense ground truth of the same shape.", show_default=False)],
    ignore: Annotated[Optional[Path], typer.Option(help="Sparse label file: score only voxels NOT annotated in it.", show_default=False)] = None,
    unlabeled: Annotated[int, typer.Option(help="Value of unannotated voxels in --ignore.")] = 255,
    as_json: AsJson = False,
) -> None:
    """Per-class IoU, Dice, precision and recall of a segmentation against ground truth."""
    from sparseseg import pipeline

    scores = pipeline.evaluate(prediction, gt, ignore, unlabeled)
    if as_json:
        _print_json(scores.as_dict())
        return
    table = Table(title=f"{prediction} vs {gt}" + (" (unannotated voxels only)" if ignore else ""))
    for column in ("class", "IoU", "Dice", "precision", "recall", "voxels"):
        table.add_column(column, justify="right")
    for c in scores.classes:
        table.add_row(str(c.label), _fmt(c.iou), _fmt(c.dice), _fmt(c.precision), _fmt(c.recall), str(c.support))
    table.add_row("mean fg", *(_fmt(scores.mean(m)) for m in ("iou", "dice", "precision", "recall")), "", style="bold")
    out.print(table)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparseseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).

    Exit codes: 0 ok, 1 internal error, 2 bad input, 130 interrupted.
    """


def main() -> None:
    app()
