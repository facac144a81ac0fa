"""The semi-automatic loop on the BraTS crop: warm starts and suggested planes (issue 4's two targets).

    python benchmarks/loop.py [--time-budget 300] [--warm-fraction 0.33] [--seed 0]

1. A user annotates 1 plane per axis (the middle ones) and densifies (cold start), keeping
   the model and its probabilities.
2. They add one plane per axis. Evenly spaced: the plane halfway between the middle plane
   and the volume's start. Suggested: the most uncertain plane of each axis by
   `sparseseg suggest` (from step 1's probabilities).
3. Each new annotation is densified cold with the full budget; the evenly spaced one also
   warm-started from step 1's model with `--warm-fraction` of the budget.
Prints the mean foreground IoU on voxels not annotated in step 2 (ground-truth classes,
as ../shared/bench/score.py counts them) and the seconds of each run. Needs ../shared/data.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sparseseg import densify_arrays, io
from sparseseg.config import Config
from sparseseg.method.annotation import planes_mask, read_annotation
from sparseseg.method.metrics import score
from sparseseg.method.uncertainty import plane_uncertainty, rank_planes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013_deepmedic" / "crop_pat0005_96x128x128"


def annotate(truth: np.ndarray, planes: dict) -> np.ndarray:
    sparse = np.full(truth.shape, 255, dtype=np.uint8)
    mask = planes_mask(planes, truth.shape)
    sparse[mask] = truth[mask]
    return sparse


def mean_fg_iou(pred: np.ndarray, truth: np.ndarray, held: np.ndarray) -> float:
    return score(pred, truth, held).mean("iou")


def run(name, image, truth, planes, config, init=None, held=None):
    annotation, _ = read_annotation(annotate(truth, planes))
    start = time.perf_counter()
    model, log, seg = densify_arrays(image, annotation, config, init=init)
    seconds = time.perf_counter() - start
    held = ~annotation.mask if held is None else held
    result = {
        "run": name,
        "planes": planes,
        "mean_fg_iou": round(mean_fg_iou(seg.labels, truth, held), 4),
        "seconds": round(seconds, 1),
        "steps": log.iterations,
    }
    print(json.dumps(result), flush=True)
    return model, seg, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--warm-fraction", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-even", action="store_true", help="only the first run and the suggested planes")
    args = parser.parse_args()
    image = io.read_image([DATA / "raw_flair.tif", DATA / "raw_t1c.tif"]).data
    truth = io.read_labels(DATA / "label.tif").data
    config = Config(device="cpu", seed=args.seed, iterations=10**6, time_budget=args.time_budget)
    first = {a: [s // 2] for a, s in zip("zyx", truth.shape)}
    model, seg, _ = run("1 plane per axis, cold", image, truth, first, config)

    even = {a: sorted(first[a] + [s // 4]) for a, s in zip("zyx", truth.shape)}
    ranked = rank_planes(plane_uncertainty(seg.probabilities), first, top=3 * 20)
    suggested = {a: list(first[a]) for a in "zyx"}
    for s in ranked:  # the most uncertain plane of each axis
        if len(suggested[s.axis]) == 1:
            suggested[s.axis].append(s.index)
    suggested = {a: sorted(v) for a, v in suggested.items()}
    # Score every run of step 2 on the same voxels: those annotated in neither new annotation.
    held = ~(planes_mask(even, truth.shape) | planes_mask(suggested, truth.shape))
    if not args.skip_even:
        run("+1 evenly spaced plane per axis, cold", image, truth, even, config, held=held)
        run(
            "+1 evenly spaced plane per axis, warm start",
            image,
            truth,
            even,
            replace(config, time_budget=args.time_budget * args.warm_fraction),
            init=model,
            held=held,
        )
    run("+1 suggested plane per axis, cold", image, truth, suggested, config, held=held)


if __name__ == "__main__":
    main()
