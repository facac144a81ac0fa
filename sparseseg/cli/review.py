"""The commands that look at volumes and segmentations: suggest, preview, sweep and eval.

Each parses its options (declared once, in `sparseseg.cli.options`), calls one library function and prints its
result; errors become exit codes in `sparseseg.cli.app.handle_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.table import Table

from sparseseg import UNLABELED
from sparseseg.cli.app import command
from sparseseg.cli.options import (
    AsJson,
    Common,
    Device,
    Gt,
    Overwrite,
    Planes,
    Spacing,
    Unlabeled,
    Volumes,
    add_options,
    parse_triple,
)
from sparseseg.cli.output import (
    TrainingProgress,
    err,
    fmt,
    out,
    print_json,
    setup_output,
    sweep_table,
)
from sparseseg.config import Config
from sparseseg.errors import InputError

#: The click that typer runs on: its own copy in newer typers, click itself in older ones.


@command(
    "suggest",
    "sparseseg densify vol.tif --slices sparse.tif -o seg.tif --save-model m --probabilities p.tif",
    "sparseseg suggest vol.tif --probabilities p.tif --slices sparse.tif --top 3",
    "sparseseg suggest vol.tif --model m --slices sparse.tif --json",
)
def suggest(
    volumes: Volumes,
    model: Annotated[Optional[Path], typer.Option(help="Model folder to predict with.", show_default=False)] = None,
    probabilities: Annotated[
        Optional[Path],
        typer.Option(
            help="Probabilities from densify/predict --probabilities (no prediction needed).", show_default=False
        ),
    ] = None,
    slices: Annotated[
        Optional[Path],
        typer.Option(
            "--slices", "-s", help="Sparse labels: their annotated planes are not suggested.", show_default=False
        ),
    ] = None,
    unlabeled: Unlabeled = UNLABELED,
    top: Annotated[int, typer.Option(help="How many planes to suggest.")] = 5,
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Suggest which planes to annotate next: the ones where the model is least sure."""
    from sparseseg.commands import workflows

    suggestions = workflows.suggest(
        volumes, model=model, probabilities=probabilities, slices=slices, unlabeled=unlabeled, top=top, device=device
    )
    if as_json:
        print_json({"suggestions": [vars(s) for s in suggestions]})
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


@command(
    "preview",
    "sparseseg preview volume.tif sparse.tif -o sparse.png",
    "sparseseg preview volume.tif seg.tif -o seg.png --centre 12,64,64",
)
def preview_(
    volume: Annotated[Path, typer.Argument(metavar="VOLUME", help="Raw volume.", show_default=False)],
    labels: Annotated[
        Optional[Path],
        typer.Argument(metavar="LABELS", help="Labels to overlay (sparse or dense).", show_default=False),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.", show_default=False)] = Path(
        "preview.png"
    ),
    centre: Annotated[
        Optional[str], typer.Option(help="Plane indices z,y,x to show [default: the centre].", show_default=False)
    ] = None,
    planes: Planes = None,
    unlabeled: Unlabeled = UNLABELED,
    spacing: Spacing = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a PNG of three orthogonal planes with labels as a coloured overlay; annotated planes are marked."""
    from sparseseg.commands import workflows

    where = None
    if centre is not None:
        try:
            where = tuple(int(v) for v in centre.split(","))
        except ValueError:
            raise InputError(f"--centre {centre!r}: expected three plane indices z,y,x") from None
        if len(where) != 3:
            raise InputError(f"--centre {centre!r}: expected three plane indices z,y,x")
    path = workflows.preview(
        [volume],
        labels,
        output,
        centre=where,
        planes=planes,
        unlabeled=unlabeled,
        overwrite=overwrite,
        spacing=parse_triple(spacing, "spacing"),
    )
    out.print(f"wrote {path}")


@command(
    "sweep",
    "sparseseg sweep volume.tif --gt truth.tif --planes 1,2,4 -o sweep_report",
    "sparseseg sweep em.tif --gt truth.tif --planes 1,3,6 --axes z --spacing 50,4,4 --time-budget 3m",
    "sparseseg sweep flair.tif t1c.tif --gt truth.tif --planes 1,2,4 --repeats 3 --seed 0 -o report",
    "sparseseg sweep flair.tif t1c.tif --gt truth.tif --planes 1,2,4 --repeats 3 --stagger -o report",
)
@add_options(training=True)
def sweep(
    volumes: Volumes,
    gt: Gt,
    config: Config,
    common: Common,
    planes: Annotated[str, typer.Option(help="Numbers of evenly spaced annotated planes per axis to try.")] = "1,2,4",
    axes: Annotated[str, typer.Option(help="Axes whose planes are annotated: zyx, z, ...")] = "zyx",
    repeats: Annotated[
        int,
        typer.Option(
            help="Training runs per plane count (seeds --seed, --seed + 1, ...); the report gives each run and their "
            "mean."
        ),
    ] = 1,
    stagger: Annotated[
        bool,
        typer.Option(
            "--stagger",
            help="Shift the planes by (run + 0.5) / repeats of their spacing in each run, so that the runs of every "
            "plane count annotate all parts of the volume equally often.",
        ),
    ] = False,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Report folder: sweep.csv, sweep.json, sweep.png.", show_default=False),
    ] = None,
    unlabeled: Unlabeled = UNLABELED,
) -> None:
    """How many planes are worth annotating: simulate k annotated planes per axis, densify, score the rest."""
    from sparseseg.commands import sweep as experiment

    setup_output(common.quiet)
    try:
        plan = experiment.SweepPlan([int(v) for v in planes.split(",")], axes.lower(), repeats, stagger)
    except ValueError:
        raise InputError("expected plane counts such as 1,2,4", param="ks", value=planes) from None
    bars = {
        (k, r): TrainingProgress(config, common.silent, label=f"k={k}" + (f" run {r + 1}" if repeats > 1 else ""))
        for k in plan.ks
        for r in range(repeats)
    }
    try:
        rows, written = experiment.sweep(
            volumes,
            gt,
            plan,
            config,
            report=output,
            overwrite=common.overwrite,
            progress_for=lambda k, r: bars.get((k, r)),
        )
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
    _print_sweep(rows, written, common)


def _print_sweep(rows, written, common: Common) -> None:
    """The sweep's runs, and their means where there are several per plane count, as tables (or JSON)."""
    from sparseseg.commands import sweep as experiment

    header, body = experiment.sweep_table(rows)
    mean_header, means = experiment.sweep_means(rows)
    if common.as_json:
        print_json(
            {
                "rows": [dict(zip(header, line)) for line in body],
                "means": [dict(zip(mean_header, line)) for line in means],
                "written": [str(p) for p in written],
            }
        )
        return
    runs = [
        [str(k), str(seed), f"{fraction:.2%}", f"{seconds:.0f}", *map(fmt, iou)]
        for k, seed, fraction, seconds, *iou in body
    ]
    out.print(sweep_table("IoU on unannotated voxels against annotated planes per axis", header, runs))
    if any(n > 1 for _, n, *_ in means):
        means = [[str(k), str(n), *map(fmt, iou)] for k, n, *iou in means]
        out.print(sweep_table(f"Mean over {means[0][1]} runs per plane count", mean_header, means))
    for path in written:
        err.print(f"wrote {path}")


@command(
    "eval",
    "sparseseg eval seg.tif --gt truth.tif",
    "sparseseg eval seg.tif --gt truth.tif --ignore sparse.tif --json",
)
def eval_(
    prediction: Annotated[
        Path, typer.Argument(metavar="PREDICTION", help="Segmentation to score.", show_default=False)
    ],
    gt: Gt,
    ignore: Annotated[
        Optional[Path],
        typer.Option(help="Sparse label file: score only voxels NOT annotated in it.", show_default=False),
    ] = None,
    unlabeled: Annotated[int, typer.Option(help="Value of unannotated voxels in --ignore.")] = UNLABELED,
    as_json: AsJson = False,
) -> None:
    """Per-class IoU, Dice, precision and recall of a segmentation against ground truth."""
    from sparseseg.commands import workflows

    scores = workflows.evaluate(prediction, gt, ignore, unlabeled)
    if as_json:
        print_json(scores.as_dict())
        return
    table = Table(title=f"{prediction} vs {gt}" + (" (unannotated voxels only)" if ignore else ""))
    for column in ("class", "IoU", "Dice", "precision", "recall", "voxels"):
        table.add_column(column, justify="right")
    for c in scores.classes:
        table.add_row(str(c.label), fmt(c.iou), fmt(c.dice), fmt(c.precision), fmt(c.recall), str(c.support))
    table.add_row("mean fg", *(fmt(scores.mean(m)) for m in ("iou", "dice", "precision", "recall")), "", style="bold")
    out.print(table)
