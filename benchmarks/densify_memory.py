"""Peak memory of `sparseseg densify` (or `train`) as the volume grows: it should stay about the same (issue 16).

    python benchmarks/densify_memory.py [--command densify|train] [--sizes 16,64] [--base 2] [--iterations 3] [--planes
    4]
                                        [--out densify_memory_out]

For each size (in M voxels) a synthetic uint8 TIFF volume of (Z, 256, 256) voxels is written
a few planes at a time (cubes of 32 voxels in a checkerboard, with noise), with sparse labels
holding the truth on ``--planes`` evenly spaced z-planes and 255 elsewhere; both sizes have
the same planes, so the slabs training reads are the same size. `sparseseg densify` runs in a
child process with a tiny network (``--base``, ``--iterations``), writing the labels and
``--probabilities`` (``--command train``: `sparseseg train` writing a model folder); its peak resident memory is the
child's maximum RSS
(``resource.getrusage(RUSAGE_CHILDREN)``, read in a process of its own for each size).
Volumes above `sparseseg.large.bounded.SLAB_THRESHOLD` take the slab path: give sizes above it.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

SIDE = 256
#: Runs one command and prints its peak resident memory (KiB on Linux) as the last line.
MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def write_pair(folder: Path, voxels: float, planes: int) -> tuple[Path, Path, tuple[int, int, int]]:
    """A synthetic volume of about ``voxels`` voxels and its sparse labels on ``planes`` z-planes, as TIFF files."""
    shape = (max(planes, int(round(voxels / SIDE**2))), SIDE, SIDE)
    volume, sparse = folder / f"volume_{shape[0]}.tif", folder / f"sparse_{shape[0]}.tif"
    image = tifffile.memmap(volume, shape=shape, dtype=np.uint8)
    labels = tifffile.memmap(sparse, shape=shape, dtype=np.uint8)
    annotated = set(((np.arange(planes) + 0.5) * shape[0] / planes).astype(int).tolist())
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:SIDE, :SIDE] // 32
    for z in range(shape[0]):
        truth = ((y + x + z // 32) % 2).astype(np.uint8)
        image[z] = np.clip(60 + 120 * truth + rng.normal(0, 25, truth.shape), 0, 255).astype(np.uint8)
        labels[z] = truth if z in annotated else 255
    image.flush()
    labels.flush()
    del image, labels
    return volume, sparse, shape


def command_line(command: str, volume: Path, sparse: Path, out: Path, base: int, iterations: int) -> list[str]:
    """The `sparseseg densify` (labels and probabilities into ``out``) or `sparseseg train` (model folder ``out``) to
    measure."""
    common = [
        "--base",
        str(base),
        "--iterations",
        str(iterations),
        "--seed",
        "0",
        "--device",
        "cpu",
        "--json",
        "--overwrite",
    ]
    if command == "train":
        return [sys.executable, "-m", "sparseseg", "train", "--pair", f"{volume}:{sparse}", "-o", str(out), *common]
    return [
        sys.executable,
        "-m",
        "sparseseg",
        "densify",
        str(volume),
        "--slices",
        str(sparse),
        "-o",
        str(out),
        "--probabilities",
        str(out.with_name(out.stem + "_prob.zarr")),
        *common,
    ]


def measure(command: list[str]) -> dict:
    """Run ``command`` in a child; its summary, wall seconds and peak RSS in GiB."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{command[3]} failed:\n{result.stderr[-3000:]}")
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-2])
    summary.update(wall_s=round(time.perf_counter() - start, 1), peak_gib=int(lines[-1]) / 2**20)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--command", choices=("densify", "train"), default="densify")
    parser.add_argument("--sizes", default="16,64", help="volume sizes in M voxels")
    parser.add_argument("--base", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--planes", type=int, default=4, help="annotated z-planes")
    parser.add_argument("--out", default="densify_memory_out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        volume, sparse, shape = write_pair(out, size * 1e6, args.planes)
        target = out / (f"seg_{shape[0]}.tif" if args.command == "densify" else f"model_{shape[0]}")
        run = measure(command_line(args.command, volume, sparse, target, args.base, args.iterations))
        rows.append(
            dict(
                shape=shape,
                voxels_m=round(float(np.prod(shape)) / 1e6, 1),
                peak_gib=round(run["peak_gib"], 3),
                wall_s=run["wall_s"],
                seconds_infer=run.get("seconds_infer"),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nsparseseg {args.command}, base {args.base}, {args.iterations} iterations, {args.planes} annotated z-planes:"
    )
    for r in rows:
        print(
            f"{r['voxels_m']:8.1f} M voxels {str(r['shape']):>18}  peak RSS {r['peak_gib']:.2f} GiB  wall "
            f"{r['wall_s']:7.0f} s"
        )
    if len(rows) > 1:
        peaks = [r["peak_gib"] for r in rows]
        print(f"peak memory spread: {100 * (max(peaks) / min(peaks) - 1):.1f} % between the sizes")


if __name__ == "__main__":
    main()
