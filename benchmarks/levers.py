"""Measure one training lever at a time on a real volume (figures in docs/benchmarks.md).

    python benchmarks/levers.py brats base=8 patch=32,64,64 time_budget=300
    python benchmarks/levers.py isbi --repeat 2 base=8 dice=1
    python benchmarks/levers.py brats --planes 4 thin=64
    python benchmarks/levers.py brats --seed 1 --repeat 2 --tta --prior

Each KEY=VALUE overrides a `sparseseg.config.Config` field. Prints the mean foreground IoU on
the unannotated voxels (classes of the ground truth, as ../shared/bench/score.py counts
them), the training steps and the seconds. Needs ../shared/data.
"""

import argparse
import dataclasses
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from sparseseg import densify_arrays, io, segment
from sparseseg.commands.synthetic import sparsify
from sparseseg.config import Config
from sparseseg.method.annotation import read_annotation
from sparseseg.method.decision import correct_prior

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    # name: (raw files, label file, crop, planes per axis, axes, spacing)
    "brats": (
        [
            "brats2013_deepmedic/crop_pat0005_96x128x128/raw_flair.tif",
            "brats2013_deepmedic/crop_pat0005_96x128x128/raw_t1c.tif",
        ],
        "brats2013_deepmedic/crop_pat0005_96x128x128/label.tif",
        (slice(None),) * 3,
        2,
        "zyx",
        None,
    ),
    "isbi": (["isbi2012_em/raw.tif"], "isbi2012_em/label.tif", (slice(None),) * 3, 3, "z", (50.0, 4.0, 4.0)),
    "vnc": (
        ["drosophila_vnc_sstem/raw.tif"],
        "drosophila_vnc_sstem/label.tif",
        (slice(None), slice(512, 768), slice(128, 384)),
        3,
        "z",
        (50.0, 4.6, 4.6),
    ),
}


def score_like_bench(pred: np.ndarray, gt: np.ndarray, held: np.ndarray) -> dict[int, float]:
    result = {}
    for c in np.unique(gt):
        if c == 0:
            continue
        p, g = (pred == c) & held, (gt == c) & held
        union = np.logical_or(p, g).sum()
        result[int(c)] = float(np.logical_and(p, g).sum() / union) if union else float("nan")
    return result


def mean_fg(scores: dict[int, float]) -> float:
    """The mean foreground IoU of `score_like_bench`'s result, rounded for printing."""
    return round(float(np.nanmean(list(scores.values()))), 4)


def parse_value(name: str, text: str):
    kinds = {f.name: f.type for f in fields(Config)}
    if name not in kinds:
        raise SystemExit(f"unknown Config field {name!r}")
    if name in ("patch", "spacing"):
        kind = int if name == "patch" else float
        return tuple(kind(v) for v in text.split(","))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("overrides", nargs="*", help="Config fields, KEY=VALUE")
    parser.add_argument("--repeat", type=int, default=1, help="runs with seeds SEED..SEED+N-1")
    parser.add_argument("--planes", type=int, help="annotated planes per axis (default: the case's)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--prior",
        action="store_true",
        help="also score the same model uncalibrated, with other strengths of the prior correction",
    )
    parser.add_argument("--tta", action="store_true", help="also score the same model with flip test-time augmentation")
    args = parser.parse_intermixed_args()
    raws, label, crop, k, axes, spacing = CASES[args.case]
    image = io.read_image([DATA / r for r in raws]).data[(slice(None),) + crop]
    gt = io.read_labels(DATA / label).data[crop]
    k = args.planes or k
    sparse, _ = sparsify(gt, k, axes)
    annotation, _ = read_annotation(sparse)
    overrides = dict(o.split("=", 1) for o in args.overrides)
    values = {"spacing": spacing, "device": "cpu", **{n: parse_value(n, v) for n, v in overrides.items()}}
    for seed in range(args.seed, args.seed + args.repeat):
        config = Config(**{**values, "seed": seed})
        start = time.perf_counter()
        model, log, seg = densify_arrays(image, annotation, config)
        scores = score_like_bench(seg.labels, gt, ~annotation.mask)
        extra = {}
        if args.prior:  # the same model, not calibrated, with other strengths of the prior correction
            uncalibrated = dataclasses.replace(
                model, offsets=None, config=dataclasses.replace(model.config, prior_correction=0.0)
            )
            raw = segment(uncalibrated, image)
            for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
                probabilities = correct_prior(raw.probabilities.copy(), model.class_weights, strength)
                labels = model.classes[np.argmax(probabilities, axis=0)]
                extra[f"prior_{strength}"] = mean_fg(score_like_bench(labels, gt, ~annotation.mask))
        if args.tta:
            flipped = segment(model, image, tta=True)
            tta_scores = score_like_bench(flipped.labels, gt, ~annotation.mask)
            extra.update(
                {
                    "mean_fg_iou_tta": mean_fg(tta_scores),
                    "iou_tta": {c: round(v, 4) for c, v in tta_scores.items()},
                    "tta_s": round(flipped.seconds, 1),
                }
            )
        print(
            json.dumps(
                {
                    "case": args.case,
                    "planes": k,
                    "overrides": overrides,
                    "seed": seed,
                    "mean_fg_iou": mean_fg(scores),
                    "iou": {c: round(v, 4) for c, v in scores.items()},
                    "steps": log.iterations,
                    "final_loss": round(log.final_loss, 4),
                    "predicted_fraction": {
                        int(c): round(float((seg.labels == c).mean()), 4) for c in np.unique(gt) if c
                    },
                    "true_fraction": {int(c): round(float((gt == c).mean()), 4) for c in np.unique(gt) if c},
                    "train_s": round(log.seconds, 1),
                    "total_s": round(time.perf_counter() - start, 1),
                    "patch": list(model.config.patch),
                    "base": model.config.base,
                    "predict_s": round(seg.seconds, 1),
                    **extra,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
