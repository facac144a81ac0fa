"""IoU and speed of inference settings on saved models: which sliding windows are worth their cost.

    python benchmarks/inference_levers.py CASE_DIR [CASE_DIR ...] [--variants all:0.5,all:0.5:0.25,first:0.25]

Each CASE_DIR holds a model folder ``model`` saved by `sparseseg densify --save-model`, the
volumes it was trained on (``raw*.tif``, or the paths in ``volumes.txt``, one per line), the
sparse annotation ``sparse.tif`` and the dense truth ``gt.tif``. For each variant
``PASSES:OVERLAP[:WIDE_OVERLAP]`` (the overlap across the annotated planes, and along the
windows' wide axes, by default the same; see `sparseseg.method.planning.window_overlaps`) the model's probabilities are
computed block by block as `predict` does,
calibrated on the annotated voxels as `densify` does, decided, and scored with
``../shared/bench/score.py`` on the unannotated voxels. PASSES is ``all`` (one pass per
annotated axis, the default), ``first`` (only the first annotated axis's window) or ``cube``
(one window twice the largest training patch). The bare network's time over the same
windows is measured in the same run, so ``ratio`` = end-to-end voxels/s over bare voxels/s.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch

from sparseseg import io
from sparseseg.method.annotation import read_annotation
from sparseseg.method.core import calibrate, decide
from sparseseg.method.modelfolder import load_model
from sparseseg.method.planning import window_overlaps
from sparseseg.method.preprocess import source_stats
from sparseseg.method.streaming import WindowSpec, plan_volume, run_blocks
from sparseseg.method.tiling import tile_slices

sys.path.insert(0, str(Path(__file__).parent))
from scale import forward_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPARSESEG_SHARED", ROOT.parent / "shared"))


def window_shapes(model, passes: str) -> dict:
    shapes = model.windows
    if passes == "all":
        return shapes
    if passes == "first":
        first = next(iter(shapes))
        return {first: shapes[first]}
    if passes == "cube":
        return {None: model.config.patch}
    raise SystemExit(f"unknown passes {passes!r}: all, first or cube")


def bare_seconds(network, windows, overlaps, shape, channels) -> tuple[float, int]:
    """Seconds of forward passes alone over the windows the volume needs, and their output voxels."""
    seconds, voxels = 0.0, 0
    with torch.inference_mode():
        for w, o in zip(windows, overlaps):
            n = len(tile_slices([max(s, p) for s, p in zip(shape, w)], w, o))
            seconds += forward_seconds(network, torch.zeros((1, channels) + tuple(w))) * n
            voxels += n * int(np.prod(w))
    return seconds, voxels


def run_variant(case: Path, passes: str, overlap: float, wide: float) -> dict:
    model = load_model(case / "model")
    model = replace(model, offsets=None, config=replace(model.config, overlap=overlap, wide_overlap=wide))
    listed = case / "volumes.txt"
    volumes = listed.read_text().split() if listed.exists() else sorted(str(p) for p in case.glob("raw*.tif"))
    source = io.open_source(volumes)
    shape = tuple(source.shape[1:])
    annotation, _ = read_annotation(tifffile.imread(case / "sparse.tif"), 255)
    probabilities = np.zeros((len(model.classes),) + shape, np.float32)

    def write(zyx, p):
        probabilities[(slice(None),) + zyx] = p

    network = model.network.eval()
    start = time.perf_counter()
    shapes = window_shapes(model, passes)
    spec = WindowSpec(shapes, model.config.patch, overlap, wide)
    plan = plan_volume(network, source.shape, spec, source_stats(source))
    windows = run_blocks(network, source, plan, write, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    model = calibrate(model, [probabilities[:, annotation.mask]], [annotation])
    labels = decide(model, probabilities)
    pred = case / f"pred_{passes}_{overlap}_{wide}.tif"
    tifffile.imwrite(pred, labels)
    text = subprocess.run(
        [sys.executable, str(SHARED / "bench" / "score.py"), str(pred), str(case / "gt.tif"), str(case / "sparse.tif")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    per_class, mean = text.strip().rsplit(" mean_fg_iou ", 1)
    bare, bare_voxels = bare_seconds(network, windows, window_overlaps(shapes, overlap, wide), shape, source.shape[0])
    voxels = int(np.prod(shape))
    return dict(
        case=case.name,
        passes=passes,
        overlap=overlap,
        wide_overlap=wide,
        windows=[list(w) for w in windows],
        blocks=len(plan.blocks),
        block=[s.stop - s.start for s in plan.blocks[0]],
        halo=list(plan.halo),
        mean_fg_iou=round(float(mean), 4),
        iou=json.loads(per_class),
        seconds=round(seconds, 1),
        redundancy=round(bare_voxels / voxels, 2),
        e2e_kvox_s=round(voxels / seconds / 1e3, 1),
        bare_kvox_s=round(bare_voxels / bare / 1e3, 1),
        ratio=round(voxels / seconds / (bare_voxels / bare), 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", type=Path)
    parser.add_argument("--variants", default="all:0.5,all:0.5:0.25,all:0.5:0.125")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    for case in args.cases:
        for variant in args.variants.split(","):
            passes, overlap, *wide = variant.split(":")
            row = run_variant(case, passes, float(overlap), float(wide[0] if wide else overlap))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
