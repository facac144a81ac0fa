"""The `sparseseg` command line: thin commands over `sparseseg.pipeline`.

Each command parses its options, builds a `Config`, calls one library function and prints
a summary. Results go to stdout; progress and messages go to stderr. Exit codes: 0 ok,
2 bad input (a one-line message naming the file and the problem), 1 internal error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
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
log = logging.getLogger("sparseseg")

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


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
            err.print("interrupted", style="red")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("SPARSESEG_DEBUG"):
                raise
            err.print(f"internal error: {type(exc).__name__}: {exc} (SPARSESEG_DEBUG=1 shows the traceback)",
                      style="red", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("sparseseg")
    logger.handlers[:] = [RichHandler(console=err, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class TrainingProgress:
    """A rich progress bar on stderr: iteration, loss, time left of the budget."""

    def __init__(self, iterations: int | None, quiet: bool):
        self.iterations = iterations
        self.bar = Progress(
            TextColumn("training"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
            transient=False,
        )
        self.task = None

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task("training", total=self.iterations, loss=float("nan"))
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.bar.update(self.task, completed=iteration, loss=loss)


PLANE_ARG = re.compile(r"^[zyxZYX]=[\d,]+$")


def _split_planes(volumes: list[Path], planes: list[str] | None) -> tuple[list[Path], list[str] | None]:
    """Accept `--planes z=12,40 y=64`: the shell hands 'y=64' over as a volume argument."""
    extra = [str(v) for v in volumes if PLANE_ARG.match(str(v))]
    if extra and not planes:
        raise InputError(f"{extra[0]}: looks like a plane, but no --planes option was given")
    kept = [v for v in volumes if not PLANE_ARG.match(str(v))]
    return kept, (planes or []) + extra if (planes or extra) else None


def _config(**kwargs) -> Config:
    return Config(**{k: v for k, v in kwargs.items() if v is not None})


@app.command(
    epilog=(
        "Examples:\n\n"
        "  sparseseg densify volume.tif --slices labels.tif -o seg.tif\n\n"
        "  sparseseg densify flair.nii.gz t1c.nii.gz --slices sparse.nii.gz -o seg.nii.gz --time-budget 5m\n\n"
        "  sparseseg densify em.tif --slices painted.tif --planes z=3,15,27 --spacing 50,4,4 -o seg.tif"
    )
)
@handle_errors
def densify(
    volumes: Annotated[list[Path], typer.Argument(help="Raw volume(s): 3D TIFF (ZYX), 4D TIFF with channels, or NIfTI. Several files = channels.")],
    slices: Annotated[Path, typer.Option("--slices", "-s", help="Sparse labels: class ids 0..K-1 on annotated voxels, --unlabeled elsewhere.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dense segmentation to write (.tif, .tiff, .nii, .nii.gz).")],
    unlabeled: Annotated[int, typer.Option(help="Value of voxels nobody annotated.")] = 255,
    planes: Annotated[Optional[list[str]], typer.Option(help="Annotated planes, e.g. z=12,40 y=64 (everything else is unlabeled).")] = None,
    spacing: Annotated[Optional[str], typer.Option(help="Voxel size z,y,x (default: from the file).")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Most training steps [default: 600 CPU, 2000 CUDA].")] = None,
    time_budget: Annotated[Optional[str], typer.Option(help="Most training time: seconds or e.g. 5m [default: 5m CPU, 2m CUDA].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[Optional[int], typer.Option(help="Random seed; repeats a CPU run exactly.")] = None,
    base: Annotated[Optional[int], typer.Option(help="Channels of the first layer [default: 16 CPU, 32 CUDA].")] = None,
    patch: Annotated[Optional[str], typer.Option(help="Training patch z,y,x [default: from the annotation].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Patches per step [default: 2 CPU, 4 CUDA].")] = None,
    lr: Annotated[float, typer.Option(help="Initial learning rate.")] = Config.lr,
    dice: Annotated[float, typer.Option(help="Weight of a soft-Dice term added to the cross-entropy.")] = Config.dice,
    augment: Annotated[bool, typer.Option(help="Augment while training.")] = True,
    tta: Annotated[bool, typer.Option(help="Average predictions over flips (8x slower inference).")] = False,
    weights_out: Annotated[Optional[Path], typer.Option(help="Also write the per-voxel weight map.")] = None,
    probabilities: Annotated[Optional[Path], typer.Option(help="Also write class probabilities (uint8, 0..255, channels first).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Train a 3D U-Net on a few annotated planes and segment the whole volume."""
    from sparseseg import pipeline

    _setup_logging(quiet)
    volumes, planes = _split_planes(volumes, planes)
    config = _config(
        unlabeled=unlabeled, spacing=parse_triple(spacing, "spacing"), iterations=iterations,
        time_budget=parse_duration(time_budget), device=device, seed=seed, base=base,
        patch=parse_triple(patch, "patch", int), batch_size=batch_size, lr=lr, dice=dice, augment=augment, tta=tta,
    )
    shown = config.resolved(pipeline.resolve_device(config.device).type == "cuda")
    with TrainingProgress(shown.iterations, quiet or as_json) as progress:
        done = pipeline.densify(
            volumes, slices, output, config, planes=planes, weights_out=weights_out,
            probabilities_out=probabilities, overwrite=overwrite, progress=progress,
        )
    result = done.result
    summary = {
        "output": [str(p) for p in done.written],
        "annotation": done.how,
        "classes": result.classes.tolist(),
        "device": result.device,
        "iterations": result.train_log.iterations,
        "stopped_by": result.train_log.stopped_by,
        "final_loss": result.train_log.final_loss,
        "seconds_train": round(result.seconds_train, 2),
        "seconds_infer": round(result.seconds_infer, 2),
        "patch": list(result.patch),
        "parameters": result.parameters,
        "seed": result.config.seed,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if not quiet:
        table = Table(show_header=False, box=None)
        for key, value in summary.items():
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        out.print(table)


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


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
    prediction: Annotated[Path, typer.Argument(help="Segmentation to score.")],
    gt: Annotated[Path, typer.Option("--gt", help="Dense ground truth of the same shape.")],
    ignore: Annotated[Optional[Path], typer.Option(help="Sparse label file: score only voxels NOT annotated in it.")] = None,
    unlabeled: Annotated[int, typer.Option(help="Value of unannotated voxels in --ignore.")] = 255,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Per-class IoU, Dice, precision and recall of a segmentation against ground truth."""
    from sparseseg import pipeline

    scores = pipeline.evaluate(prediction, gt, ignore, unlabeled)
    if as_json:
        typer.echo(json.dumps(scores.as_dict()))
        return
    table = Table(title=f"{prediction} vs {gt}" + (" (unannotated voxels)" if ignore else ""))
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
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016)."""


def main() -> None:
    app()
