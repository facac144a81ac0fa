"""Memory and speed of `sparseseg predict` as the volume grows, against the bare network in the same run.

    python benchmarks/scale.py [--sizes 32,256] [--base 8] [--out scale_out]

For each size (in M voxels) a synthetic uint8 TIFF volume of 64-plane-deep slabs is written
block by block (isotropic, Y = X), and `sparseseg predict` segments it in a child process
timed with /usr/bin/time (peak resident memory, wall time). The model is a base-``--base``
network trained for a few steps on a small synthetic volume: quality does not matter here,
only its shape. The bare network's throughput is measured in the same run on the same model
and the same windows (forward passes alone, no reading, blending or writing), so the ratio
end-to-end / bare is what the sliding window, its overlap and its passes cost. Targets
(issue 16): peak at most 1.5 GB and within 10 % between the sizes; ratio at least 0.5.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from sparseseg import synthetic
from sparseseg.config import Config
from sparseseg.core import fit
from sparseseg.labels import read_annotation
from sparseseg.modelfolder import load_model, save_model
from sparseseg.planning import inference_windows
from sparseseg.tiling import tile_slices


def make_model(folder: Path, base: int) -> None:
    image, truth = synthetic.blobs((48, 96, 96), seed=0)
    annotation, _ = read_annotation(synthetic.sparsify(truth, 2)[0])
    model, _ = fit([image[None].astype(np.float32)], [annotation], Config(iterations=5, base=base, device="cpu", seed=0))
    shutil.rmtree(folder, ignore_errors=True)
    save_model(folder, model)


def make_volume(path: Path, voxels: float) -> tuple[int, int, int]:
    side = int(round(np.sqrt(voxels / 64) / 16)) * 16
    shape = (64, side, side)
    data = tifffile.memmap(path, shape=shape, dtype=np.uint8)
    rng = np.random.default_rng(0)
    for z in range(shape[0]):
        data[z] = rng.integers(0, 255, shape[1:], dtype=np.uint8)
    data.flush()
    del data
    return shape


def bare_throughput(folder: Path, shape: tuple[int, int, int]) -> float:
    """Output voxels per second of forward passes alone, over the windows predict uses, each as often as it runs."""
    model = load_model(folder)
    network = model.network.eval()
    windows = inference_windows(model.windows, model.config.patch, shape, network.size_multiple)
    voxels = seconds = 0.0
    with torch.inference_mode():
        for window in windows:
            x = torch.randn(1, 1, *window).contiguous(memory_format=torch.channels_last_3d)
            network(x)
            start = time.perf_counter()
            network(x)
            took = time.perf_counter() - start
            n = len(tile_slices(shape, window, model.config.overlap))
            voxels, seconds = voxels + n * np.prod(window), seconds + n * took
    return voxels / seconds


def run_predict(folder: Path, volume: Path, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "sparseseg", "predict", str(folder), str(volume),
               "-o", str(out), "--json", "--overwrite"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", result.stderr).group(1).strip()
    parts = [float(p) for p in wall.split(":")]
    summary["wall_s"] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    summary["peak_gb"] = peak / 2**20
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,256", help="volume sizes in M voxels")
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--out", default="scale_out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    make_model(out / "model", args.base)
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        volume = out / f"volume_{size:g}M.tif"
        shape = make_volume(volume, size * 1e6)
        bare = bare_throughput(out / "model", shape)
        run = run_predict(out / "model", volume, out / f"seg_{size:g}M.tif")
        voxels = float(np.prod(shape))
        rows.append(dict(shape=shape, voxels_m=voxels / 1e6, peak_gb=run["peak_gb"], wall_s=run["wall_s"],
                         e2e_kvox_s=voxels / run["wall_s"] / 1e3, bare_kvox_s=bare / 1e3,
                         ratio=voxels / run["wall_s"] / bare, windows=run["windows"]))
        volume.unlink()
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nbase {args.base} model; peak memory, end-to-end and bare-network throughput (k voxels/s):")
    for r in rows:
        print(f"{r['voxels_m']:8.1f} M voxels {str(r['shape']):>18}  peak {r['peak_gb']:.2f} GB  wall {r['wall_s']:7.0f} s  "
              f"e2e {r['e2e_kvox_s']:6.1f}  bare {r['bare_kvox_s']:6.1f}  ratio {r['ratio']:.3f}")
    if len(rows) > 1:
        peaks = [r["peak_gb"] for r in rows]
        print(f"peak memory spread: {100 * (max(peaks) / min(peaks) - 1):.1f} % between the sizes")


if __name__ == "__main__":
    main()
