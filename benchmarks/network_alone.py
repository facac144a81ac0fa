"""The network's own contribution: each model a `compare_rf.py --keep-models` run saved, applied without its forest.

usage: python benchmarks/network_alone.py OUT [OUT ...]

For each case folder of each OUT (compare_rf.py's --out) and each model_sSEED in it: the network alone (the forest
dropped, its prior correction as the decision) segments the case's volume, scored on the unannotated voxels as
../shared/bench/score.py scores them. Printed beside it, from compare_rf.py's results.json: the final result
(network and forest blended), the blend weight, and the network's and the forest's IoU on the held-out planes.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
from compare_rf import CASES
from rich.console import Console
from rich.table import Table

from sparseseg.method.core import prior_of, segment
from sparseseg.method.modelfolder import load_model

console = Console()


def mean_foreground_iou(pred: np.ndarray, gt: np.ndarray, sparse: np.ndarray) -> float:
    """Mean IoU over the foreground classes of ``gt`` on the voxels ``sparse`` leaves unannotated (255)."""
    held = sparse == 255
    scores = []
    for c in np.unique(gt[held]):
        if c == 0:
            continue
        p, g = (pred == c) & held, (gt == c) & held
        scores.append((p & g).sum() / (p | g).sum())
    return float(np.mean(scores))


def network_alone(folder: Path, case: Path) -> float:
    model = load_model(folder)
    alone = replace(model, forest=None, blend=1.0, offsets=prior_of(model))
    raws = sorted(case.glob("raw*.tif")) or CASES[case.name]["raws"]  # written by compare_rf.py, or the case's own
    gt = case / "gt.tif" if (case / "gt.tif").exists() else CASES[case.name]["gt"]
    image = np.stack([tifffile.imread(p) for p in raws]).astype(np.float32)
    labels = segment(alone, image, "cpu").labels
    return mean_foreground_iou(labels, tifffile.imread(gt), tifffile.imread(case / "sparse.tif"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outs", nargs="+", type=Path)
    args = parser.parse_args()
    table = Table(title="the network alone against the blend (mean fg IoU on unannotated voxels)")
    for col in ("case", "seed", "network alone", "final", "blend", "network held-out", "forest held-out"):
        table.add_column(col, justify="left" if col == "case" else "right")
    rows = []
    for out in args.outs:
        results = {(r["case"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
        for folder in sorted(out.glob("*/model_s*")):
            case, seed = folder.parent.name, int(folder.name.split("_s")[1])
            ran = results.get((case, seed), {})
            row = dict(case=case, seed=seed, network_alone=network_alone(folder, folder.parent))
            row |= {k: ran.get(k) for k in ("mean_fg_iou", "blend", "network_held_out", "forest_held_out")}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            shown = [row["network_alone"], row["mean_fg_iou"], row["blend"], row["network_held_out"]]
            table.add_row(case, str(seed), *(f"{v:.3f}" for v in shown + [row["forest_held_out"]]))
    console.print(table)


if __name__ == "__main__":
    main()
