"""What the command line shows: the consoles, logging, the training progress bar, summaries and tables.

Results go to stdout (``out``; with --json one JSON object); progress and messages to stderr (``err``).
"""

from __future__ import annotations

import json
import logging
import os
import time

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sparseseg.config import Config
from sparseseg.method.progress import Quiet

#: Exit code of a run ended by Ctrl-C (also after writing a partial result).
EXIT_INTERRUPTED = 130

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def setup_output(quiet: bool) -> None:
    """Log messages to stderr (warnings only when ``quiet``); tables on stdout whole when it is not a terminal."""
    logger = logging.getLogger("sparseseg")
    logger.handlers[:] = [RichHandler(console=err, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # into a file or pipe: whole tables, not cut to 80 columns with ellipses


class TrainingProgress(Quiet):
    """A rich progress bar on stderr showing the phase, step, loss, estimate, elapsed time and the time budget
    (a `sparseseg.method.progress.Progress`).

    The bar fills with whichever limit is nearer: the steps or the time budget. It appears
    at the first phase, so errors found while reading the input are not preceded by
    an empty bar.
    """

    def __init__(self, config: Config, quiet: bool, label: str = "training"):
        from sparseseg.method.core import resolve_device

        shown = config.resolved(resolve_device(config.device).type == "cuda")
        self.budget = shown.time_budget
        self.iterations = shown.iterations
        self.label = label
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("step {task.fields[step]}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[estimate]}"),
            TimeElapsedColumn(),
            TextColumn(f"of {self.budget:.0f} s / {self.iterations} steps"),
            console=err,
            disable=quiet,
        )
        self.task = self.bar.add_task(label, total=1.0, step=0, loss=float("nan"), estimate="")
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.bar.stop()
            self.started = False
        return False

    def _show(self) -> None:
        if not self.started:
            self.bar.start()
            self.started = True

    def phase(self, name: str) -> None:
        """Name the phase beside the label ('training: forest')."""
        self._show()
        self.bar.update(self.task, description=f"{self.label}: {name}")

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self._show()
        done = max(iteration / max(self.iterations, 1), elapsed / self.budget if self.budget else 1.0)
        self.bar.update(self.task, completed=min(done, 1.0), step=iteration, loss=loss)

    def estimated(self, iou: float, spread: float) -> None:
        """Show the IoU estimated on the held-out planes (`sparseseg.method.ensemble`) beside the loss: the forest's
        first, seconds into the run, then the final one."""
        self._show()
        said = f"est. IoU {iou:.2f}" + ("" if spread != spread else f" ± {spread:.2f}")
        self.bar.update(self.task, estimate=said)


class BlockProgress:
    """A rich progress bar on stderr over the blocks of a volume: voxels done, voxels per second, time left."""

    def __init__(self, quiet: bool, label: str = "predicting"):
        self.label = label
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
        self.task = self.bar.add_task(label, total=None, rate="")
        self.started = time.perf_counter()
        self.shown = False

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.shown:
            self.bar.stop()
        return False

    def __call__(self, done: int, total: int) -> None:
        if not self.shown:  # shown from the first block on, so that an error in reading is not preceded by a bar
            self.bar.start()
            self.shown = True
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(
            self.task,
            completed=done,
            total=total,
            rate=f"{done / 1e6:.1f} of {total / 1e6:.1f} M voxels, {rate / 1e3:.0f} k voxels/s",
        )


def _finite(value):
    """NaN and infinities become None, so that --json output is strict JSON."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json(obj) -> None:
    """One JSON object on stdout."""
    typer.echo(json.dumps(_finite(obj), allow_nan=False))


def summary_table(summary: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        print_json(summary)
    elif not quiet:
        table = Table(show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in summary.items():
            if key == "estimate" and isinstance(value, dict):
                value = estimate_said(value)
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        out.print(table)


def estimate_said(estimate: dict) -> str:
    """'IoU 0.66 ± 0.05 (0.62 on held-out planes z=33, y=68, +0.04 from the forest fitted without each plane in turn;
    network 0.58, forest 0.60; network weight 0.7)'."""

    def number(v):
        return "n/a" if v is None else f"{v:.2f}"

    planes = ", ".join(f"{a}={i}" for a, v in estimate["held_out_planes"].items() for i in v)
    spread = "" if estimate["spread"] is None else f" ± {estimate['spread']:.2f}"
    correction = estimate.get("correction") or 0.0  # model folders saved before the correction have none
    held = (
        f"on held-out planes {planes}"
        if not correction
        else f"{number(estimate['held_out_iou'])} on held-out planes {planes}, {correction:+.2f} from the forest "
        "fitted without each plane in turn"
    )
    return (
        f"IoU {number(estimate['iou'])}{spread} ({held}; network {number(estimate['network_iou'])}, "
        f"forest {number(estimate['forest_iou'])}; network weight {estimate['blend']:.1f})"
    )


def fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


def sweep_table(title: str, header: list[str], lines: list[list[str]]) -> Table:
    short = {
        "planes_per_axis": "planes",
        "annotated_fraction": "annotated",
        "seconds": "s",
        "mean_fg_iou": "mean fg",
        "mean_fg_iou_min": "lowest",
        "mean_fg_iou_max": "highest",
    }
    table = Table(title=title)
    for column in header:
        table.add_column(short.get(column, column.replace("iou_", "class ")), justify="right", no_wrap=True)
    for line in lines:
        table.add_row(*line)
    return table


def train_summary(model, train_log) -> dict:
    return {
        "classes": model.classes.tolist(),
        "device": train_log.device,
        "iterations": train_log.iterations,
        "stopped_by": train_log.stopped_by,
        "interrupted": train_log.stopped_by == "interrupt",
        "final_loss": round(train_log.final_loss, 5),
        "seconds_train": round(train_log.seconds, 2),
        "patch": list(model.config.patch),
        "parameters": model.parameters,
        "seed": model.config.seed,
        "class_offsets": None if model.offsets is None else [round(float(v), 3) for v in model.offsets],
        "estimate": model.estimate,
        "warnings": train_log.warnings,
    }


def finish(summary: dict, as_json: bool, quiet: bool) -> None:
    """Print the summary; a run whose training was interrupted exits 130 after writing its partial result."""
    summary_table(summary, as_json, quiet)
    if summary.get("interrupted"):
        err.print("interrupted: the outputs hold the result of the training done so far", style="red")
        raise typer.Exit(EXIT_INTERRUPTED)
