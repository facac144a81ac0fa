"""The commands that make or use a model: densify, train, predict and export.

Each parses its options (declared once, in `sparseseg.cli.options`), builds a `Config`, calls one library function
and prints a summary; errors become exit codes in `sparseseg.cli.app.handle_errors`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from sparseseg import UNLABELED
from sparseseg.cli.app import command, sigterm_as_interrupt
from sparseseg.cli.options import (
    TTA,
    Authors,
    Common,
    Device,
    Init,
    Output,
    Overlap,
    PackageName,
    Planes,
    Resume,
    Sample,
    SaveModel,
    Segmenting,
    Slices,
    Unlabeled,
    Volumes,
    WeightsOut,
    add_options,
)
from sparseseg.cli.output import (
    BlockProgress,
    TrainingProgress,
    finish,
    setup_output,
    summary_table,
    train_summary,
)
from sparseseg.config import Config
from sparseseg.errors import InputError

#: The click that typer runs on: its own copy in newer typers, click itself in older ones.

PLANE_ARG = re.compile(r"^[zyxZYX]=[\d,]+$")


def _split_planes(volumes: list[Path], planes: list[str] | None) -> tuple[list[Path], list[str] | None]:
    """Accept `--planes z=12,40 y=64`: the shell hands 'y=64' over as a volume argument."""
    extra = [str(v) for v in volumes if PLANE_ARG.match(str(v))]
    if extra and not planes:
        raise InputError(f"{extra[0]}: looks like a plane, but no --planes option was given")
    kept = [v for v in volumes if not PLANE_ARG.match(str(v))]
    return kept, ((planes or []) + extra) or None


@command(
    "densify",
    "sparseseg densify volume.tif --slices labels.tif -o seg.tif",
    "sparseseg densify flair.nii.gz t1c.nii.gz --slices sparse.nii.gz -o seg.nii.gz --time-budget 5m",
    "sparseseg densify em.tif --slices painted.tif --planes z=3,15,27 --spacing 50,4,4 -o seg.tif",
    "sparseseg densify vol.tif --slices more.tif -o seg2.tif --init model1 --save-model model2",
    "sparseseg densify big.tif --slices sparse.tif -o seg.zarr --workers 4   # the dense inference on 4 processes",
)
@add_options(TTA, training=True, segmenting=True)
def densify(
    volumes: Volumes,
    slices: Slices,
    output: Output,
    config: Config,
    common: Common,
    segmenting: Segmenting,
    unlabeled: Unlabeled = UNLABELED,
    planes: Planes = None,
    weights_out: WeightsOut = None,
    save_model: SaveModel = None,
    init: Init = None,
    partial: Annotated[
        bool, typer.Option(help="On Ctrl-C, still segment with the model trained so far (exit code 130).")
    ] = True,
) -> None:
    """Train a 3D U-Net on a few annotated planes and segment the whole volume."""
    from sparseseg.commands import workflows

    setup_output(common.quiet)
    volumes, planes = _split_planes(volumes, planes)
    options = workflows.DensifyOptions(
        planes=planes,
        weights_out=weights_out,
        outputs=workflows.Outputs(segmenting.probabilities, segmenting.preview, common.overwrite),
        save_model_to=save_model,
        init=init,
        partial=partial,
        cluster=workflows.Cluster(segmenting.workers, segmenting.scheduler),
    )
    with TrainingProgress(config, common.silent) as progress:
        report = workflows.densify(volumes, slices, output, config, options, progress)
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
@add_options(segmenting=True)
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
    segmenting: Segmenting,
    device: Device = "auto",
    tta: Annotated[
        Optional[bool],
        typer.Option(help="Average predictions over flips (8x slower) [default: as trained].", show_default=False),
    ] = None,
    resume: Resume = False,
    overlap: Overlap = None,
) -> None:
    """Apply a saved model to a new volume (the fully automatic setting)."""
    from sparseseg.commands import workflows

    setup_output(common.quiet)
    options = workflows.PredictOptions(
        outputs=workflows.Outputs(segmenting.probabilities, segmenting.preview, common.overwrite),
        device=device,
        tta=tta,
        cluster=workflows.Cluster(segmenting.workers, segmenting.scheduler),
        resume=resume,
        overlap=overlap,
    )
    with BlockProgress(common.silent) as progress, sigterm_as_interrupt():
        report = workflows.predict(model, volumes, output, options, progress)
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
