"""sparseseg vs the random-forest baseline, side by side on the real volumes in ../shared/data.

usage: python benchmarks/compare_rf.py [--cases brats3,isbi,...] [--seeds 0,1] [--methods rf,sparseseg] [--slabs]
                                       [--time-budget 10m] [--out bench_out] [--extra "--opt val"] [--keep-models]
                                       [--quick] [--interrupt-after S]

The development cases (the default, `DEVELOPMENT`): BraTS pat0003-pat0006 (train/ and validation/)
each cropped to its tumour's bounding box plus 8 voxels, FLAIR + T1c, 2 planes per axis; ISBI 2012;
two crops of the Drosophila VNC stack; two synthetic volumes that differ from each other. Defaults
are chosen by the mean margin over the forest and the worst margin (any case, any seed), never by
one case. test1,test2 (BraTS test/ pat0001, pat0002) are held out: never tune on them.

For each case: simulate a sparse annotation once (../shared/bench/sparse_sim.py), run
../shared/bench/rf_baseline.py and `sparseseg densify` on it as child processes (wall time and
peak RSS of each child), score both with ../shared/bench/score.py on the unannotated voxels and
cross-check with `sparseseg eval --json`; sparseseg runs once per --seeds. Prints the runs, the
margins per case and over all cases, and writes results.json / results.csv
into --out. The shared scripts are the yardstick: they are called from their place, never copied
(SPARSESEG_SHARED names another place for the shared folder, e.g. on a machine without ../shared).

With --interrupt-after S each densify gets a Ctrl-C (SIGINT) S seconds after it starts, as a user
who stops it early would, and goes on to segment with what it has (densify's --partial): the
anytime result, whose wall time counts until it is written (issue 15: the forest's IoU within
about a minute). With --slabs every case takes the path of a volume past 8 M voxels (its slabs).

The case brats256 (not in the default list) is the GPU target's volume: the whole BraTS case pat0005
(FLAIR + T1c NIfTI, 240x240x155 voxels of 1 mm) padded with air to 256^3, 2 planes per axis.
"""

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPARSESEG_SHARED", ROOT.parent / "shared"))
BENCH, DATA = SHARED / "bench", SHARED / "data"
BRATS = DATA / "brats2013_deepmedic" / "crop_pat0005_96x128x128"
PAT5 = DATA / "brats2013_deepmedic" / "train" / "brats_2013_pat0005_1"
VNC, ISBI = DATA / "drosophila_vnc_sstem", DATA / "isbi2012_em"

BRATS_ROOT = DATA / "brats2013_deepmedic"


def brats_case(split, patient, **extra):
    """A BraTS 2013 case (FLAIR + T1c NIfTI) cropped to its tumour's bounding box plus a margin, 2 planes per axis."""
    folder = BRATS_ROOT / split / f"brats_2013_pat{patient:04d}_1"
    return dict(
        raws=[folder / "Flair_subtrMeanDivStd.nii.gz", folder / "T1c_subtrMeanDivStd.nii.gz"],
        gt=folder / "OTMultiClass.nii.gz",
        k=2,
        axes=None,
        spacing=None,
        crop="tumour",
        quick_crop="tumour-quick",
        **extra,
    )


# crop: z0:z1,y0:y1,x0:x1 (None = whole file; "tumour": the bounding box of the labels > 0 plus TUMOUR_MARGIN);
# quick_crop: tiny crop for --quick. synthetic: arguments of sparseseg.commands.synthetic.blobs instead of files.
# vnc 512:768,128:384 and vnc2 256:512,256:512 hold all 5 classes, synapse included, on the annotated z planes
# ([:, :256, :256] has no synapse voxel on them, so no method could learn that class).
TUMOUR_MARGIN = 8
CASES = {
    "brats3": brats_case("validation", 3),
    "brats4": brats_case("validation", 4),
    "brats5": brats_case("train", 5),
    "brats6": brats_case("train", 6),
    "isbi": dict(
        raws=[ISBI / "raw.tif"],
        gt=ISBI / "label.tif",
        k=3,
        axes="0",
        spacing="50,4,4",
        crop=None,
        quick_crop=":,:96,:96",
    ),
    "vnc": dict(
        raws=[VNC / "raw.tif"],
        gt=VNC / "label.tif",
        k=3,
        axes="0",
        spacing="50,4.6,4.6",
        crop=":,512:768,128:384",
        quick_crop=":,912:1008,0:96",
    ),
    "vnc2": dict(
        raws=[VNC / "raw.tif"],
        gt=VNC / "label.tif",
        k=3,
        axes="0",
        spacing="50,4.6,4.6",
        crop=":,256:512,256:512",
        quick_crop=":,256:352,256:352",
    ),
    "blobs": dict(
        synthetic=dict(shape=(48, 96, 96), n_blobs=12, noise=0.35, seed=11),
        k=2,
        axes=None,
        spacing=None,
        crop=None,
        quick_crop=":,:48,:48",
    ),
    "blobs_noisy": dict(
        synthetic=dict(shape=(40, 128, 128), n_blobs=24, noise=0.7, seed=12),
        k=2,
        axes="0",
        spacing="2,1,1",
        crop=None,
        quick_crop=":,:48,:48",
    ),
    # The old development crop of pat0005 (96x128x128, not centred on the tumour) and the GPU volume.
    "brats": dict(
        raws=[BRATS / "raw_flair.tif", BRATS / "raw_t1c.tif"],
        gt=BRATS / "label.tif",
        k=2,
        axes=None,
        spacing=None,
        crop=None,
        quick_crop="32:64,32:96,32:96",
    ),
    "brats256": dict(
        raws=[PAT5 / "Flair_subtrMeanDivStd.nii.gz", PAT5 / "T1c_subtrMeanDivStd.nii.gz"],
        gt=PAT5 / "OTMultiClass.nii.gz",
        k=2,
        axes=None,
        spacing=None,
        crop=None,
        pad=256,
        quick_crop="128:176,112:176,32:96",
    ),
    # The held-out test split: never choose a default or a lever by these. Run once at the end of a quality change.
    "test1": brats_case("test", 1),
    "test2": brats_case("test", 2),
}
#: The development benchmark (`make bench`): defaults are chosen by its mean and its worst margin, never by one case.
DEVELOPMENT = ["brats3", "brats4", "brats5", "brats6", "isbi", "vnc", "vnc2", "blobs", "blobs_noisy"]
console = Console()


#: `sparseseg` with every volume taken past the slab threshold: the slab path of a large volume, on any case.
ON_SLABS = (
    "import sys; from sparseseg.large import bounded; bounded.SLAB_THRESHOLD = 0; "
    "from sparseseg.cli import main; sys.argv[0] = 'sparseseg'; main()"
)


def sparseseg_cmd(slabs=False):
    if slabs:
        return [sys.executable, "-c", ON_SLABS]
    exe = Path(sys.executable).parent / "sparseseg"
    return [str(exe)] if exe.exists() else [shutil.which("sparseseg") or "sparseseg"]


def crop_slices(spec):
    return tuple(slice(*[int(v) if v else None for v in part.split(":")]) for part in spec.split(","))


def read_zyx(path, pad=None):
    """A TIFF (z, y, x) or a NIfTI (x, y, z, transposed); with pad, padded to a pad^3 cube with its corner value."""
    if str(path).endswith((".nii", ".nii.gz")):
        import nibabel  # sparseseg's own dependency

        a = np.asanyarray(nibabel.load(path).dataobj).transpose(2, 1, 0)
    else:
        a = tifffile.imread(path)
    if pad:
        before = [(pad - n) // 2 for n in a.shape]
        a = np.pad(a, [(b, pad - n - b) for b, n in zip(before, a.shape)], constant_values=a[0, 0, 0])
    return a


def tumour_crop(gt, quick=False):
    """The bounding box of the labels > 0 plus TUMOUR_MARGIN voxels (with quick, a 32x48x48 box at its centre)."""
    where = np.argwhere(gt > 0)
    lo, hi = where.min(0), where.max(0) + 1
    if quick:
        mid = (lo + hi) // 2
        return tuple(slice(max(0, m - h), m + h) for m, h in zip(mid, (16, 24, 24)))
    return tuple(slice(max(0, a - TUMOUR_MARGIN), min(n, b + TUMOUR_MARGIN)) for a, b, n in zip(lo, hi, gt.shape))


def prepare(name, case, quick, out):
    """Write the (cropped, padded or synthetic) volumes and the sparse labels into out/name; return their paths."""
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    spec = case["quick_crop"] if quick else case["crop"]
    if "synthetic" in case:
        from sparseseg.commands.synthetic import blobs

        image, truth = blobs(**case["synthetic"])
        sl = crop_slices(spec) if spec else ()
        raws, gt = [d / "raw0.tif"], d / "gt.tif"
        tifffile.imwrite(raws[0], np.ascontiguousarray(image[sl]))
        tifffile.imwrite(gt, np.ascontiguousarray(truth[sl]))
    elif spec or case.get("pad"):
        truth = read_zyx(case["gt"], case.get("pad"))
        sl = tumour_crop(truth, quick) if spec and spec.startswith("tumour") else crop_slices(spec) if spec else ()
        raws = [d / f"raw{i}.tif" for i in range(len(case["raws"]))]
        for src, dst in zip(case["raws"], raws):
            tifffile.imwrite(dst, np.ascontiguousarray(read_zyx(src, case.get("pad"))[sl], dtype=np.float32))
        gt = d / "gt.tif"
        tifffile.imwrite(gt, np.ascontiguousarray(truth[sl], dtype=np.uint8))
    else:
        raws, gt = case["raws"], case["gt"]
    sparse = d / "sparse.tif"
    cmd = [sys.executable, str(BENCH / "sparse_sim.py"), str(gt), str(sparse), str(case["k"])]
    cmd += [case["axes"]] if case["axes"] else []
    info = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    shape = tifffile.imread(gt).shape
    console.print(f"[bold]{name}[/] shape {shape}, planes {info}")
    return d, [str(p) for p in raws], str(gt), str(sparse)


def run_measured(cmd, log, interrupt_after=None):
    """Run cmd as a child; return (returncode, wall seconds, peak RSS MB of the child and its children).

    With interrupt_after (seconds) the child gets a SIGINT then, as from Ctrl-C in a terminal."""
    t = time.perf_counter()
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        # a benchmark started in the background (nohup ... &) ignores SIGINT, and so would its children: not this one
        hear = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if interrupt_after else None
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=hear)
        timer = threading.Timer(interrupt_after, proc.send_signal, (signal.SIGINT,)) if interrupt_after else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        if timer is not None:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it: tell Popen
    return proc.returncode, time.perf_counter() - t, usage.ru_maxrss / 1024  # Linux: KB


def score(pred, gt, sparse):
    """score.py prints '{"1": iou, ...} mean_fg_iou X'; return ({class: iou}, mean)."""
    cmd = [sys.executable, str(BENCH / "score.py"), pred, gt, sparse]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    table, mean = text.rsplit(" mean_fg_iou ", 1)
    return {int(c): v for c, v in json.loads(table).items()}, float(mean)


def train_figures(log):
    """Device, training steps and seconds per step from `densify --json`'s summary: the log's last JSON line (after it,
    an interrupted run says so)."""
    summary = next(
        json.loads(line) for line in reversed(Path(log).read_text().strip().splitlines()) if line.startswith("{")
    )
    steps, seconds = summary["iterations"], summary["seconds_train"]
    estimate = summary.get("estimate") or {}
    return dict(
        device=summary["device"],
        iterations=steps,
        seconds_train=seconds,
        ms_per_step=round(1000 * seconds / max(steps, 1), 1),
        seconds_infer=summary["seconds_infer"],
        estimate=estimate.get("iou", float("nan")),
        estimate_spread=estimate.get("spread", float("nan")),
        estimate_held_out=estimate.get("held_out_iou", estimate.get("iou", float("nan"))),
        blend=estimate.get("blend", float("nan")),
        network_held_out=estimate.get("network_iou", float("nan")),
        forest_held_out=estimate.get("forest_iou", float("nan")),
    )


def eval_check(pred, gt, sparse):
    cmd = sparseseg_cmd() + ["eval", pred, "--gt", gt, "--ignore", sparse, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return float("nan")
    return float(json.loads(proc.stdout)["mean_foreground"]["iou"])


def run_case(name, case, args):
    d, raws, gt, sparse = prepare(name, case, args.quick, args.out)
    budget = "20s" if args.quick else args.time_budget
    runs = [("rf", None)] if "rf" in args.methods else []
    runs += [("sparseseg", seed) for seed in args.seeds] if "sparseseg" in args.methods else []
    rows = []
    for method, seed in runs:
        tag = method if seed is None else f"{method}_s{seed}"
        pred = d / f"pred_{tag}.tif"
        if method == "rf":
            cmd = [sys.executable, str(BENCH / "rf_baseline.py"), ",".join(raws), sparse, str(pred)]
        else:
            cmd = sparseseg_cmd(args.slabs) + [
                "densify",
                *raws,
                "--slices",
                sparse,
                "-o",
                str(pred),
                "--unlabeled",
                "255",
                "--json",
                "--overwrite",
                "--seed",
                str(seed),
            ]
            cmd += ["--time-budget", budget] if budget else []
            cmd += ["--spacing", case["spacing"]] if case["spacing"] else []
            cmd += ["--iterations", "20"] if args.quick else []
            cmd += ["--save-model", str(d / f"model_s{seed}")] if args.keep_models else []
            cmd += shlex.split(args.extra)
        pred.unlink(missing_ok=True)
        console.print(f"  running {tag} ...")
        stop = args.interrupt_after if method == "sparseseg" else None
        rc, seconds, peak_mb = run_measured(cmd, d / f"{tag}.log", stop)
        rc = 0 if stop and rc == 130 else rc  # 130: interrupted, and the result written with the model so far
        row = dict(
            case=name,
            method=method,
            seed=seed,
            seconds=round(seconds, 1),
            peak_mb=round(peak_mb),
            mean_fg_iou=float("nan"),
            eval_mean_fg_iou=float("nan"),
            iou={},
            ok=False,
        )
        if rc == 0 and pred.exists():
            row["iou"], row["mean_fg_iou"] = score(str(pred), gt, sparse)
            row["eval_mean_fg_iou"] = eval_check(str(pred), gt, sparse)
            row["ok"] = True
            row |= train_figures(d / f"{tag}.log") if method == "sparseseg" else {}
        else:
            console.print(f"  [red]{tag} failed (exit {rc}), see {d / (tag + '.log')}[/]")
        rows.append(row)
    return rows


def isnan(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, short=False):
    return "n/a" if isnan(v) else (f"{v:.3f}".lstrip("0") if short else f"{v:.3f}")


def print_table(rows):
    table = Table(
        title="sparseseg vs random forest (IoU on unannotated voxels)",
        caption="eval: mean fg IoU by `sparseseg eval --json`, yellow where it differs from score.py",
    )
    for col in (
        "case",
        "method",
        "mean fg IoU",
        "estimate",
        "IoU per class",
        "eval",
        "time (s)",
        "peak MB",
        "steps",
        "ms/step",
        "blend",
    ):
        table.add_column(
            col,
            justify="left" if col in ("case", "method", "IoU per class") else "right",
            no_wrap=col in ("case", "method"),
        )
    for r in rows:
        same = abs(r["mean_fg_iou"] - r["eval_mean_fg_iou"]) < 1e-4
        check = fmt(r["eval_mean_fg_iou"])
        check = check if same or not r["ok"] else f"[yellow]{check}[/]"
        per_class = " ".join(f"{c}:{fmt(v, True)}" for c, v in sorted(r["iou"].items())) or "failed"
        method = r["method"] if r.get("seed") is None else f"{r['method']} s{r['seed']}"
        table.add_row(
            r["case"],
            method,
            fmt(r["mean_fg_iou"]),
            fmt(r.get("estimate", float("nan"))),
            per_class,
            check,
            f"{r['seconds']:.1f}",
            str(r["peak_mb"]),
            str(r.get("iterations", "")),
            str(r.get("ms_per_step", "")),
            fmt(r.get("blend", float("nan")), True),
        )
    console.print(table)


def margins(rows):
    """Per case: the forest's IoU, sparseseg's mean and lowest over seeds, and their margins over the forest;
    over all cases: the mean margin (of the seed means) and the worst margin (of any case and seed)."""
    cases = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        rf = [r["mean_fg_iou"] for r in rows if r["case"] == case and r["method"] == "rf"]
        ss = [r["mean_fg_iou"] for r in rows if r["case"] == case and r["method"] == "sparseseg"]
        if not rf or isnan(rf[0]) or not ss or any(isnan(v) for v in ss):
            continue
        cases[case] = dict(
            rf=rf[0],
            mean=float(np.mean(ss)),
            lowest=min(ss),
            seeds=len(ss),
            margin=float(np.mean(ss)) - rf[0],
            worst_margin=min(ss) - rf[0],
        )
    if not cases:
        return {}
    table = Table(title="margin over the random forest (mean fg IoU on unannotated voxels)")
    for col in ("case", "forest", "sparseseg mean", "lowest", "seeds", "margin", "worst margin"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for case, m in cases.items():
        table.add_row(
            case,
            fmt(m["rf"]),
            fmt(m["mean"]),
            fmt(m["lowest"]),
            str(m["seeds"]),
            f"{m['margin']:+.3f}",
            f"{m['worst_margin']:+.3f}",
        )
    overall = dict(
        mean_margin=float(np.mean([m["margin"] for m in cases.values()])),
        worst_margin=min(m["worst_margin"] for m in cases.values()),
        worst_case=min(cases, key=lambda c: cases[c]["worst_margin"]),
    )
    table.add_row(
        "[bold]all[/]",
        "",
        "",
        "",
        "",
        f"[bold]{overall['mean_margin']:+.3f}[/]",
        f"[bold]{overall['worst_margin']:+.3f}[/] ({overall['worst_case']})",
    )
    console.print(table)
    errors = [
        r["estimate"] - r["mean_fg_iou"]
        for r in rows
        if r["method"] == "sparseseg" and not isnan(r.get("estimate")) and not isnan(r["mean_fg_iou"])
    ]
    if errors:
        overall |= dict(
            estimate_within_005=float(np.mean(np.abs(errors) <= 0.05)),
            estimate_mean_error=float(np.mean(errors)),
            estimate_runs=len(errors),
        )
        console.print(
            f"estimate - true IoU: within 0.05 on {overall['estimate_within_005']:.0%} of {len(errors)} runs, "
            f"mean {overall['estimate_mean_error']:+.3f}"
        )
    return dict(cases=cases, overall=overall)


def no_nan(x):
    """NaN -> None, so that results.json is strict JSON."""
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [no_nan(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def write_results(rows, case_margins, out, args):
    with open(out / "results.json", "w") as f:
        result = dict(args=vars(args) | {"out": str(out)}, rows=rows, margins=case_margins)
        json.dump(no_nan(result), f, indent=2, allow_nan=False)
    classes = sorted({c for r in rows for c in r["iou"]})
    fields = (
        ["case", "method", "seed", "mean_fg_iou", "eval_mean_fg_iou"]
        + [f"iou_{c}" for c in classes]
        + [
            "seconds",
            "peak_mb",
            "ok",
            "device",
            "iterations",
            "seconds_train",
            "ms_per_step",
            "seconds_infer",
            "estimate",
            "estimate_spread",
            "estimate_held_out",
            "blend",
            "network_held_out",
            "forest_held_out",
        ]
    )
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: v for k, v in r.items() if k != "iou"} | {f"iou_{c}": v for c, v in r["iou"].items()})
    console.print(f"results written to {out / 'results.json'} and {out / 'results.csv'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cases",
        default=",".join(DEVELOPMENT),
        help="comma-separated, from: " + ",".join(CASES) + " (test1,test2: the held-out split, run once at the end)",
    )
    ap.add_argument("--seeds", default="0,1", help="sparseseg seeds, comma-separated (each case runs once per seed)")
    ap.add_argument("--keep-models", action="store_true", help="save each sparseseg run's model folder (model_sSEED)")
    ap.add_argument("--methods", default="rf,sparseseg", help="comma-separated, from: rf,sparseseg")
    ap.add_argument(
        "--time-budget", default=None, help="sparseseg --time-budget per case (default: sparseseg's own default)"
    )
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--extra", default="", help='extra sparseseg densify options, e.g. "--dice 0.5"')
    ap.add_argument("--quick", action="store_true", help="tiny crops, 20 s / 20 iterations: a smoke test")
    ap.add_argument("--slabs", action="store_true", help="densify every case as a volume past 8 M voxels (the slabs)")
    ap.add_argument(
        "--interrupt-after",
        type=float,
        default=None,
        metavar="S",
        help="send each densify a Ctrl-C (SIGINT) S seconds after it starts: the anytime result",
    )
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or set(args.methods) - {"rf", "sparseseg"}:
        ap.error(f"--methods {args.methods}: choose from rf,sparseseg")
    args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:  # results so far are written after each case, so a long run can be read before it ends
        rows += run_case(name, CASES[name], args)
        write_results(rows, margins(rows), args.out, args)
    print_table(rows)
    write_results(rows, margins(rows), args.out, args)


if __name__ == "__main__":
    main()
