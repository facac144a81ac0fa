"""The `sparseseg` command line: thin commands over `sparseseg.commands.workflows`, `sparseseg.commands.sweep` and
`sparseseg.commands.export`.

Each command parses its options (declared once, in `sparseseg.cli.options`), builds a
`Config`, calls one library function and prints a summary. Results go to stdout (with
--json: one JSON object); progress and messages go to stderr. Exit codes: 0 ok, 2 bad
input (one line naming the file or flag, nothing written), 1 internal error, 130
interrupted (a partial result, if one was written, says so).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.table import Table

from sparseseg import UNLABELED, __version__
from sparseseg.cli.options import (
    TTA,
    AsJson,
    Authors,
    Common,
    Device,
    Gt,
    Init,
    Output,
    Overwrite,
    PackageName,
    Planes,
    Preview,
    Probabilities,
    Sample,
    SaveModel,
    Scheduler,
    Slices,
    Spacing,
    Unlabeled,
    Volumes,
    WeightsOut,
    Workers,
    add_options,
    flag,
    parse_triple,
)
from sparseseg.cli.output import (
    EXIT_INTERRUPTED,
    BlockProgress,
    TrainingProgress,
    err,
    finish,
    fmt,
    out,
    print_json,
    setup_output,
    summary_table,
    sweep_table,
    train_summary,
)
from sparseseg.config import Config
from sparseseg.errors import InputError, Interrupted

#: The click that typer runs on: its own copy in newer typers, click itself in older ones.
_click = getattr(typer.core, "_click", None) or __import__("click")


def one_line(text: str) -> str:
    """``text`` on one line: a newline or carriage return (in a file's name, say) shown as ``\\n`` or ``\\r``."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def _say_error(text: str) -> None:
    err.print(f"error: {one_line(text)}", style="red", markup=False, soft_wrap=True)


class _OneLineErrors(typer.core.TyperGroup):
    """Click's usage errors (a missing argument, ``--iterations abc``) as the one ``error:`` line every other error
    gets, with a hint to use --help; a bare ``sparseseg`` shows the help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _click.exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(EXIT_BAD_INPUT)
        except _click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            _say_error(f"{exc.format_message()} (see '{ctx.command_path if ctx else 'sparseseg'} --help')")
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("interrupted", style="red")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    context_settings={"max_content_width": 160},
    help="Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def message(exc: InputError) -> str:
    """The one-line message of an `InputError`, naming the flag of the parameter at fault."""
    return exc.named(flag(exc.param)) if exc.param else str(exc)


def handle_errors(command):
    """Turn errors into one line on stderr and an exit code: the one place where this happens."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            _say_error(message(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except Interrupted as exc:
            of = f" of {exc.total}" if exc.total else ""
            err.print(
                f"interrupted: {exc.done}{of} blocks are done and kept in {', '.join(exc.folders)}; run the same "
                "command again with --resume to finish (or delete that folder)",
                style="red",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except KeyboardInterrupt:
            err.print("interrupted (no output is left half-written)", style="red")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("SPARSESEG_DEBUG"):
                raise
            err.print(
                one_line(f"internal error: {type(exc).__name__}: {exc} (SPARSESEG_DEBUG=1 shows the traceback)"),
                style="red",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


PLANE_ARG = re.compile(r"^[zyxZYX]=[\d,]+$")


def _split_planes(volumes: list[Path], planes: list[str] | None) -> tuple[list[Path], list[str] | None]:
    """Accept `--planes z=12,40 y=64`: the shell hands 'y=64' over as a volume argument."""
    extra = [str(v) for v in volumes if PLANE_ARG.match(str(v))]
    if extra and not planes:
        raise InputError(f"{extra[0]}: looks like a plane, but no --planes option was given")
    kept = [v for v in volumes if not PLANE_ARG.match(str(v))]
    return kept, ((planes or []) + extra) or None


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a batch system's stop) taken as Ctrl-C while the block: a resumable output is kept as on Ctrl-C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class _Command(typer.core.TyperCommand):
    """A command whose help reads at 80 columns: plain click columns (descriptions about 48 wide), the options in
    their panels (everyday options, extra outputs, large volumes, expert levers), and a usage line that reads as
    click's do: ``VOLUME...``, not typer's ``{VOLUME}...``."""

    def collect_usage_pieces(self, ctx):
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx, formatter):
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None)
                panels.setdefault(
                    panel or ("Arguments" if param.param_type_name == "argument" else "Options"), []
                ).append(record)
        for panel, records in panels.items():
            with formatter.section(panel):
                formatter.write_dl(records)


def _example(line: str, width: int = 76) -> str:
    """A command line cut before an option into shell continuation lines of at most ``width`` characters."""
    pieces, lines = re.split(r" (?=--?[a-z])", line), []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) + 3 <= width:
            lines[-1] += " " + piece
        else:
            lines.append(piece if not lines else "    " + piece)
    return " \\\n".join(lines)


def command(name: str, *examples: str):
    """Register command ``name`` with its examples in its help, its errors turned into exit codes by `handle_errors`."""
    # \b: click keeps the lines as they are
    epilog = "Examples:\n\n" + "\n\n".join("\b\n" + _example(line) for line in examples)
    return lambda function: app.command(name=name, epilog=epilog, cls=_Command)(handle_errors(function))


@command(
    "densify",
    "sparseseg densify volume.tif --slices labels.tif -o seg.tif",
    "sparseseg densify flair.nii.gz t1c.nii.gz --slices sparse.nii.gz -o seg.nii.gz --time-budget 5m",
    "sparseseg densify em.tif --slices painted.tif --planes z=3,15,27 --spacing 50,4,4 -o seg.tif",
    "sparseseg densify vol.tif --slices more.tif -o seg2.tif --init model1 --save-model model2",
    "sparseseg densify big.tif --slices sparse.tif -o seg.zarr --workers 4   # the dense inference on 4 processes",
)
@add_options(TTA, training=True)
def densify(
    volumes: Volumes,
    slices: Slices,
    output: Output,
    config: Config,
    common: Common,
    unlabeled: Unlabeled = UNLABELED,
    planes: Planes = None,
    weights_out: WeightsOut = None,
    probabilities: Probabilities = None,
    preview: Preview = None,
    save_model: SaveModel = None,
    init: Init = None,
    partial: Annotated[
        bool, typer.Option(help="On Ctrl-C, still segment with the model trained so far (exit code 130).")
    ] = True,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Train a 3D U-Net on a few annotated planes and segment the whole volume."""
    from sparseseg.commands import workflows

    setup_output(common.quiet)
    volumes, planes = _split_planes(volumes, planes)
    with TrainingProgress(config, common.silent) as progress:
        report = workflows.densify(
            volumes,
            slices,
            output,
            config,
            planes=planes,
            weights_out=weights_out,
            outputs=workflows.Outputs(probabilities, preview, common.overwrite),
            save_model_to=save_model,
            init=init,
            partial=partial,
            progress=progress,
            workers=workers,
            scheduler=scheduler,
        )
    summary = {"output": [str(p) for p in report.written], "annotation": report.how}
    summary.update(train_summary(report.model, report.train_log))
    summary["seconds_infer"] = round(report.segmentation.seconds, 2)
    finish(summary, common.as_json, common.quiet)


def _parse_pair(pair: str) -> tuple[list[str], str]:
    """'flair.tif,t1c.tif:labels.tif' -> (['flair.tif', 't1c.tif'], 'labels.tif').

    The volumes and the labels are split at the last ':' that does not name a dataset inside an
    HDF5 file (a ':' right after .h5 or .hdf5 and before a '/'): 'a.h5:/raw:b.h5:/labels' ->
    (['a.h5:/raw'], 'b.h5:/labels').
    """
    cuts = [
        i
        for i, char in enumerate(pair)
        if char == ":" and not (pair[:i].lower().endswith((".h5", ".hdf5")) and pair[i + 1 : i + 2] == "/")
    ]
    volumes, labels = (pair[: cuts[-1]], pair[cuts[-1] + 1 :]) if cuts else ("", "")
    if not volumes or not labels or "" in volumes.split(","):
        raise InputError(
            "expected VOLUME[,VOLUME...]:LABELS (an HDF5 dataset as file.h5:/path)", param="pairs", value=pair
        )
    return volumes.split(","), labels


@command(
    "train",
    "sparseseg train --pair a.tif:a_sparse.tif --pair b.tif:b_sparse.tif -o kidney_model",
    "sparseseg train --pair flair1.nii.gz,t1c1.nii.gz:sparse1.nii.gz -o brats_model --time-budget 20m",
    "sparseseg train --pair em.h5:/raw:em.h5:/sparse -o em_model",
)
@add_options(training=True)
def train(
    pair: Annotated[
        list[str],
        typer.Option(
            help="VOLUME[,VOLUME...]:LABELS, one per sparsely annotated volume (repeat); an HDF5 dataset as "
            "file.h5:/path, e.g. a.h5:/raw:a.h5:/labels.",
            show_default=False,
            rich_help_panel="Everyday options",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Model folder to write.", show_default=False, rich_help_panel="Everyday options"
        ),
    ],
    config: Config,
    common: Common,
    unlabeled: Unlabeled = UNLABELED,
    init: Init = None,
) -> None:
    """Train one model on several sparsely annotated volumes and save it as a model folder."""
    from sparseseg.commands import workflows

    setup_output(common.quiet)
    pairs = [_parse_pair(p) for p in pair]
    with TrainingProgress(config, common.silent) as progress:
        model, train_log, folder = workflows.train_files(
            pairs, output, config, overwrite=common.overwrite, init=init, progress=progress
        )
    finish({"model": str(folder), **train_summary(model, train_log)}, common.as_json, common.quiet)


@command(
    "predict",
    "sparseseg predict kidney_model new_volume.tif -o new_seg.tif --preview new_seg.png",
    "sparseseg predict brats_model flair.nii.gz t1c.nii.gz -o seg.nii.gz --json",
    "sparseseg predict model stack.ome.zarr -o stack.ome.zarr/labels/seg --workers 4",
    "sparseseg predict model stack.ome.zarr -o seg.zarr --scheduler tcp://10.0.0.5:8786",
    "sparseseg predict model big.zarr -o seg.zarr --resume   # after Ctrl-C: go on where it stopped",
    "sparseseg predict old_model big.zarr -o seg.zarr --overlap 0   # an older model: fewer windows, somewhat less IoU",
)
@add_options()
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="Model folder (from densify --save-model or train), or a package from export (.zip).",
            show_default=False,
        ),
    ],
    volumes: Volumes,
    output: Output,
    common: Common,
    device: Device = "auto",
    tta: Annotated[
        Optional[bool],
        typer.Option(help="Average predictions over flips (8x slower) [default: as trained].", show_default=False),
    ] = None,
    probabilities: Probabilities = None,
    preview: Preview = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with the .zarr or .ome.zarr output that an interrupted run of the same command left: only the "
            "blocks it does not hold are predicted.",
            rich_help_panel="Large volumes",
        ),
    ] = False,
    overlap: Annotated[
        Optional[float],
        typer.Option(
            help="Overlap of the windows across the annotated planes, 0 to below 1 [default: as trained: 0 for new "
            "models, 0.75 for models trained before sparseseg put the planes at any depth of a patch].",
            show_default=False,
            rich_help_panel="Large volumes",
        ),
    ] = None,
) -> None:
    """Apply a saved model to a new volume (the fully automatic setting)."""
    from sparseseg.commands import workflows

    setup_output(common.quiet)
    with BlockProgress(common.silent) as progress, sigterm_as_interrupt():
        report = workflows.predict(
            model,
            volumes,
            output,
            outputs=workflows.Outputs(probabilities, preview, common.overwrite),
            device=device,
            tta=tta,
            progress=progress,
            workers=workers,
            scheduler=scheduler,
            resume=resume,
            overlap=overlap,
        )
    summary = {
        "output": [str(p) for p in report.written],
        "classes": report.model.classes.tolist(),
        "seconds_infer": round(report.seconds, 2),
        "windows": [list(w) for w in report.windows],
    }
    summary_table(summary, common.as_json, common.quiet)


@command(
    "export",
    'sparseseg export kidney_model -o kidney.zip --author "Ada Lovelace"',
    'sparseseg export kidney_model -o kidney.zip --sample volume.tif --name "Kidney 3D U-Net" --license CC0-1.0',
    "sparseseg predict kidney.zip new_volume.tif -o new_seg.tif",
)
@add_options()
def export(
    model: Annotated[
        Path,
        typer.Argument(metavar="MODEL", help="Model folder (from densify --save-model or train).", show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="bioimage.io model package to write (.zip).",
            show_default=False,
            rich_help_panel="Everyday options",
        ),
    ],
    common: Common,
    sample: Sample = None,
    name: PackageName = None,
    author: Authors = None,
    license: Annotated[
        str, typer.Option(help="SPDX license identifier of the weights.", rich_help_panel="Everyday options")
    ] = "CC-BY-4.0",
) -> None:
    """Write a model as a bioimage.io model package (format 0.5), checked by bioimageio.spec (the bioimage extra)."""
    from sparseseg.commands.export import export_model

    setup_output(common.quiet)
    path = export_model(
        model, output, sample=sample, name=name, authors=author or [], license=license, overwrite=common.overwrite
    )
    summary_table({"output": str(path)}, common.as_json, common.quiet)


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
        ks = [int(v) for v in planes.split(",")]
    except ValueError:
        raise InputError("expected plane counts such as 1,2,4", param="ks", value=planes) from None
    bars = {
        (k, r): TrainingProgress(config, common.silent, label=f"k={k}" + (f" run {r + 1}" if repeats > 1 else ""))
        for k in ks
        for r in range(repeats)
    }
    try:
        rows, written = experiment.sweep(
            volumes,
            gt,
            ks,
            axes.lower(),
            config,
            report=output,
            overwrite=common.overwrite,
            progress_for=lambda k, r: bars.get((k, r)),
            repeats=repeats,
            stagger=stagger,
        )
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)
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
    if repeats > 1:
        means = [[str(k), str(n), *map(fmt, iou)] for k, n, *iou in means]
        out.print(sweep_table(f"Mean over {repeats} runs per plane count", mean_header, means))
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparseseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).

    Exit codes: 0 ok, 1 internal error, 2 bad input, 130 interrupted.
    """


def main() -> None:
    app()
