"""How many planes are worth annotating: simulate a user who annotates k planes per axis, densify, score the rest.

`sweep_arrays` runs the experiment on arrays, `sweep` from files with a report folder
(sweep.csv, sweep.json, sweep.png); `sweep_table` and `sweep_means` lay out its rows.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sparseseg import io
from sparseseg.commands.outputs import with_spacing
from sparseseg.commands.review import same_shape
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.paths import check_distinct
from sparseseg.method.annotation import check_class_ids, planes_mask, read_annotation
from sparseseg.method.ensemble import densify_arrays
from sparseseg.method.metrics import Scores, score
from sparseseg.method.planning import AXES
from sparseseg.method.progress import Progress

log = logging.getLogger("sparseseg")

#: The files of a report folder.
REPORT_FILES = ("sweep.csv", "sweep.json", "sweep.png")


@dataclass
class SweepRow:
    k: int
    seed: int
    planes: dict[str, list[int]]
    annotated_fraction: float
    scores: Scores
    seconds: float
    offset: float | None = None  # where the planes lie in their spacing (`sparseseg.commands.synthetic.evenly_spaced`)


@dataclass(frozen=True)
class SweepPlan:
    """Which runs a sweep makes: ``ks`` evenly spaced planes per axis of ``axes``, each ``repeats`` times; with
    ``stagger``, run r of N places the planes at offset (r + 0.5) / N of their spacing."""

    ks: Sequence[int]
    axes: str = AXES
    repeats: int = 1
    stagger: bool = False

    def check(self, shape: tuple[int, int, int] | None = None) -> None:
        """Refuse plane counts below 1 (or not below the volume's planes along an axis, given its ``shape``), fewer
        than 1 run, and axes other than z, y and x."""
        if not self.ks or min(self.ks) < 1:
            raise InputError("give plane counts of at least 1, e.g. 1,2,4", param="ks", value=list(self.ks))
        if self.repeats < 1:
            raise InputError("give at least 1 training run per plane count", param="repeats", value=self.repeats)
        axes = self.axes
        if not axes or set(axes) - set(AXES) or len(set(axes)) != len(axes):
            raise InputError("use letters from z, y, x, e.g. zyx or z", param="axes", value=axes)
        for k in self.ks if shape is not None else ():
            for a in axes:
                size = shape[AXES.index(a)]
                if k >= size:
                    raise InputError(
                        f"the volume has {size} planes along {a}; give fewer than {size}", param="ks", value=k
                    )


def sweep_arrays(
    image: np.ndarray,
    truth: np.ndarray,
    plan: SweepPlan,
    config: Config,
    progress_for: Callable[[int, int], Progress | None] = lambda k, repeat: None,
) -> list[SweepRow]:
    """Simulate a user who annotates k evenly spaced planes per axis, densify, and score the rest, for each k.

    Each k is trained ``plan.repeats`` times, with seeds ``config.seed``, ``config.seed + 1``, ...
    (drawn at random when ``config.seed`` is None), the same seeds for every k. The planes
    are those of `sparseseg.commands.synthetic.evenly_spaced`, staggered as `SweepPlan` says. Where
    the planes hold one class only there is nothing to train on: that run is scored as
    predicting this class everywhere.
    """
    plan.check(truth.shape)
    first = config.seed if config.seed is not None else secrets.randbits(30)
    rows = []
    for k in plan.ks:
        for repeat in range(plan.repeats):
            offset = (repeat + 0.5) / plan.repeats if plan.stagger else None
            seeded = replace(config, seed=first + repeat)
            rows.append(_sweep_run(image, truth, (k, plan.axes, offset), seeded, progress_for(k, repeat)))
    return rows


def _sweep_run(image, truth, where, config: Config, progress) -> SweepRow:
    """One run of a sweep: ``where`` is k, the axes and the planes' offset."""
    from sparseseg.commands.synthetic import sparsify

    k, axes, offset = where
    start = time.perf_counter()
    sparse, planes = sparsify(truth, k, axes, unlabeled=config.unlabeled, offset=offset)
    annotated = planes_mask(planes, truth.shape)
    seen = np.unique(truth[annotated])
    if len(seen) == 1:
        log.warning(
            "k=%s, planes %s: only class %s is annotated; scored as %s everywhere", k, planes, *[int(seen[0])] * 2
        )
        labels = np.full_like(truth, seen[0])
    else:
        annotation, _ = read_annotation(sparse, config.unlabeled, planes, name=f"k={k}")
        labels = densify_arrays(image, annotation, config, progress)[2].labels
    scores = score(labels, truth, ~annotated)
    return SweepRow(k, config.seed, planes, float(annotated.mean()), scores, time.perf_counter() - start, offset)


def sweep(
    volumes: Sequence[str | os.PathLike],
    gt: str | os.PathLike,
    plan: SweepPlan,
    config: Config = Config(),
    *,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress_for: Callable[[int, int], Progress | None] = lambda k, repeat: None,
) -> tuple[list[SweepRow], list[Path]]:
    """`sweep_arrays` from files; with ``report`` (a folder), write sweep.csv, sweep.json and sweep.png there."""
    plan.check()
    if report is not None:
        report = Path(report)
        if not report.parent.is_dir():
            raise InputError(f"{report}: folder {report.parent} does not exist")
        if report.exists() and not report.is_dir():
            raise InputError(f"{report}: exists and is not a folder")
        if report.is_dir():
            for name in REPORT_FILES:
                io.check_output(report / name, overwrite, suffixes=(Path(name).suffix,))
        check_distinct([*volumes, gt], [report / name for name in REPORT_FILES])
    image = io.read_image(volumes)
    truth = io.read_labels(gt)
    check_class_ids(truth.data, str(truth.path))
    same_shape(truth, image.data.shape[1:])
    plan.check(image.data.shape[1:])
    if report is not None:
        report.mkdir(exist_ok=True)
    rows = sweep_arrays(image.data, truth.data, plan, with_spacing(config, image), progress_for)
    written = [] if report is None else _write_sweep_report(report, rows, overwrite)
    return rows, written


def sweep_table(rows: Sequence[SweepRow]) -> tuple[list[str], list[list]]:
    """Header and rows of the sweep report, one per run: k, seed, annotated fraction, seconds, mean foreground IoU, IoU
    per class."""
    labels = sorted({c.label for row in rows for c in row.scores.classes})
    header = ["planes_per_axis", "seed", "annotated_fraction", "seconds", "mean_fg_iou"] + [f"iou_{v}" for v in labels]
    body = []
    for row in rows:
        per_class = {c.label: c.iou for c in row.scores.classes}
        body.append(
            [row.k, row.seed, row.annotated_fraction, row.seconds, row.scores.mean("iou")]
            + [per_class.get(v, float("nan")) for v in labels]
        )
    return header, body


def sweep_means(rows: Sequence[SweepRow]) -> tuple[list[str], list[list]]:
    """Per k, over its runs: k, runs, the mean of each IoU column of `sweep_table`, and the lowest and highest mean
    foreground IoU."""
    header, body = sweep_table(rows)
    iou = header[4:]
    out = []
    for k in dict.fromkeys(line[0] for line in body):
        runs = np.array([line[4:] for line in body if line[0] == k], dtype=float)
        means = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan") for c in runs.T]
        out.append([k, len(runs)] + means + [float(runs[:, 0].min()), float(runs[:, 0].max())])
    return ["planes_per_axis", "runs"] + iou + ["mean_fg_iou_min", "mean_fg_iou_max"], out


def _write_sweep_report(folder: Path, rows: Sequence[SweepRow], overwrite: bool) -> list[Path]:
    from sparseseg.commands.plot import line_chart

    header, body = sweep_table(rows)
    csv = "\n".join(",".join(map(str, line)) for line in [header] + body) + "\n"
    data = [
        {
            "planes_per_axis": r.k,
            "seed": r.seed,
            "offset": r.offset,
            "planes": r.planes,
            "annotated_fraction": r.annotated_fraction,
            "seconds": r.seconds,
            "scores": r.scores.as_dict(),
        }
        for r in rows
    ]
    names, means = sweep_means(rows)
    ks = [line[0] for line in means]
    series = {"mean foreground": (ks, [line[2] for line in means])}
    for i, name in enumerate(names[3:-2], start=3):
        if name != "iou_0":
            series[f"class {name[4:]}"] = (ks, [line[i] for line in means])
    runs = f", mean of {means[0][1]} runs" if means[0][1] > 1 else ""
    runs += ", staggered planes" if rows[0].offset is not None else ""
    picture = line_chart(
        series, title=f"IoU on unannotated voxels{runs}", xlabel="annotated planes per axis", ylabel="IoU"
    )
    return [
        io.write_text(folder / "sweep.csv", csv, overwrite, suffixes=(".csv",)),
        io.write_json(folder / "sweep.json", data, overwrite),
        io.write_png(folder / "sweep.png", picture, overwrite),
    ]
