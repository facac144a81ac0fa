"""Peak memory of `sparseseg train` as the volume grows: past `SLAB_THRESHOLD` it should stay about the same.

    python benchmarks/train_memory.py [--sizes 16,64] [--base 2] [--iterations 3] [--planes 4] [--out train_memory_out]

The volumes and labels are those of `densify_memory.py` (synthetic uint8 TIFF volumes of
(Z, 256, 256) voxels, the truth on ``--planes`` evenly spaced z-planes and 255 elsewhere; the
same planes at each size, so training reads slabs of the same size). `sparseseg train --pair`
runs in a child process with a tiny network (``--base``, ``--iterations``) and writes a model
folder; its peak resident memory is the child's maximum RSS (``resource.getrusage(RUSAGE_CHILDREN)``,
read in a process of its own for each size). Volumes above `sparseseg.bounded.SLAB_THRESHOLD`
(8 M voxels) take the slab path: give sizes above it (``--sizes 0.1,0.2`` is a quick smoke run of
the whole-read path).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from densify_memory import MEASURE, write_pair  # beside this file, on the path when it runs as a script


def train(volume: Path, sparse: Path, folder: Path, base: int, iterations: int) -> dict:
    """Run `sparseseg train` in a child; its summary, wall seconds and peak RSS in GiB."""
    command = [sys.executable, "-m", "sparseseg", "train", "--pair", f"{volume}:{sparse}", "-o", str(folder),
               "--base", str(base), "--iterations", str(iterations), "--seed", "0", "--device", "cpu", "--json",
               "--overwrite"]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"train failed:\n{result.stderr[-3000:]}")
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-2])
    summary.update(wall_s=round(time.perf_counter() - start, 1), peak_gib=int(lines[-1]) / 2**20)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,64", help="volume sizes in M voxels")
    parser.add_argument("--base", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--planes", type=int, default=4, help="annotated z-planes")
    parser.add_argument("--out", default="train_memory_out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        volume, sparse, shape = write_pair(out, size * 1e6, args.planes)
        run = train(volume, sparse, out / f"model_{shape[0]}", args.base, args.iterations)
        rows.append(dict(shape=shape, voxels_m=round(float(np.prod(shape)) / 1e6, 1), peak_gib=round(run["peak_gib"], 3),
                         wall_s=run["wall_s"], seconds_train=run.get("seconds_train")))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nsparseseg train, base {args.base}, {args.iterations} iterations, {args.planes} annotated z-planes:")
    for r in rows:
        print(f"{r['voxels_m']:8.1f} M voxels {str(r['shape']):>18}  peak RSS {r['peak_gib']:.2f} GiB  wall {r['wall_s']:7.0f} s")
    if len(rows) > 1:
        peaks = [r["peak_gib"] for r in rows]
        print(f"peak memory spread: {100 * (max(peaks) / min(peaks) - 1):.1f} % between the sizes")


if __name__ == "__main__":
    main()
