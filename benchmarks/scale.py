"""Memory and speed of `sparseseg predict` as the volume grows, against the bare network in the same run.

    python benchmarks/scale.py [--sizes 32,256] [--base 8] [--axes zyx] [--format zarr] [--device cpu]
                               [--overlap F] [--wide-overlap F] [--out scale_out]

For each size (in M voxels) a synthetic uint8 volume 64 planes deep (isotropic, Y = X) is
written a slab of 32 planes at a time, as a Zarr array (chunks of 32x128x128), an OME-Zarr
image (written by sparseseg, pyramid included; the labels go into its ``labels/seg``) or a
TIFF (``--format``), and `sparseseg predict` segments it into an output of the same format in a child process
timed with /usr/bin/time (peak resident memory, wall time). The model is a base-``--base``
network trained for a few steps on a small synthetic volume annotated on 2 planes of each of
``--axes`` (zyx: one pass per axis at inference; z: one pass, as for an EM stack annotated
on sections): quality does not matter here, only its shape. The bare network's throughput
is measured in the same run on the same model and the same windows (forward passes alone, no
reading, blending or writing), so the ratio end-to-end / bare is what the blocks, the sliding
window's overlap and its passes cost. The bare network is timed just before predict and just
after it, and the ratio taken against the mean of the two: on this shared 2-core machine one
measurement moved by up to a quarter between runs minutes apart. Targets (issue 16): peak at most 1.5 GB and within 10 %
between the sizes; ratio at least 0.5. With ``--device cuda`` predict runs in this process
instead, so that the GPU's peak memory (``torch.cuda.max_memory_allocated``) can be read for
each size: it must not grow with the volume (issue 16: nothing the size of the volume lives
on the device); the host peak is then this process's, which only grows from size to size.
"""

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from sparseseg import io
from sparseseg.commands import synthetic
from sparseseg.config import Config
from sparseseg.io.blocks import with_halo
from sparseseg.method.annotation import read_annotation
from sparseseg.method.core import output_chunks, plan_of
from sparseseg.method.fitting import fit
from sparseseg.method.modelfolder import load_model, save_model
from sparseseg.method.planning import inference_windows, window_overlaps
from sparseseg.method.tiling import tile_slices

log = logging.getLogger("scale")

#: Chunks of the Zarr volumes, and of the segmentation predict writes (`sparseseg.io`'s default for a new Zarr array).
CHUNKS = (32, 128, 128)


def make_model(folder: Path, base: int, axes: str, **overlaps) -> None:
    """A base-``base`` model trained for 5 steps, annotated on 2 planes of each of ``axes``; ``overlaps``: its
    ``overlap`` and ``wide_overlap`` where given (`sparseseg.config.Config`)."""
    image, truth = synthetic.blobs((48, 96, 96), seed=0)
    annotation, _ = read_annotation(synthetic.sparsify(truth, 2, axes)[0])
    given = {k: v for k, v in overlaps.items() if v is not None}
    config = Config(iterations=5, base=base, device="cpu", seed=0, **given)
    model, _ = fit([image[None].astype(np.float32)], [annotation], config)
    shutil.rmtree(folder, ignore_errors=True)
    save_model(folder, model)


def volume_shape(voxels: float) -> tuple[int, int, int]:
    """64 planes of about ``voxels`` voxels in all, Y = X a multiple of 16."""
    side = int(round(np.sqrt(voxels / 64) / 16)) * 16
    return (64, side, side)


def make_volume(path: Path, voxels: float) -> tuple[int, int, int]:
    """A random uint8 volume at ``path`` (TIFF, Zarr or OME-Zarr by its suffix), written a slab of chunks at a time."""
    shape = volume_shape(voxels)
    rng = np.random.default_rng(0)
    if path.name.endswith(".ome.zarr"):  # through sparseseg's own OME-Zarr writer: an NGFF image with its pyramid
        sink = io.create_sink(path, shape, np.uint8, spacing=(1.0, 1.0, 1.0), overwrite=True, chunks=CHUNKS)
        depth = CHUNKS[0]  # a slab of whole chunks at a time: no chunk is written twice
        for z in range(0, shape[0], depth):
            n = min(depth, shape[0] - z)
            sink.write(
                (slice(z, z + n), slice(0, shape[1]), slice(0, shape[2])),
                rng.integers(0, 255, (n,) + shape[1:], dtype=np.uint8),
            )
        sink.finish()
        return shape
    if path.suffix == ".zarr":
        import zarr

        data = zarr.create_array(store=str(path), shape=shape, chunks=CHUNKS, dtype=np.uint8, overwrite=True)
    else:
        data = tifffile.memmap(path, shape=shape, dtype=np.uint8)
    for z in range(0, shape[0], CHUNKS[0]):
        data[z : z + CHUNKS[0]] = rng.integers(0, 255, (min(CHUNKS[0], shape[0] - z),) + shape[1:], dtype=np.uint8)
    if path.suffix != ".zarr":
        data.flush()
    del data
    return shape


def forward_seconds(network, x, warm: int = 2, timed: int = 5) -> float:
    """The median seconds of one forward pass of ``x`` after ``warm`` untimed ones, network and input channels-last.

    As predict runs it (`sparseseg.method.sliding_window.predict_probabilities`): with its weights left in
    the default layout the network ran up to 40 % slower, which made the bare network look
    slower than predict; on CUDA in bfloat16 autocast, each pass waited for.
    """
    network = network.to(x.device, memory_format=torch.channels_last_3d)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    cuda = x.device.type == "cuda"

    def forward():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cuda):
            network(x)
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warm):
        forward()
    seconds = []
    for _ in range(timed):
        start = time.perf_counter()
        forward()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def bare_throughput(folder: Path, shape: tuple[int, int, int], device: str = "cpu") -> float:
    """Output voxels per second of forward passes alone, over the windows predict uses, each as often as it runs."""
    model = load_model(folder)
    network = model.network.eval()
    windows = inference_windows(model.windows, model.config.patch, shape, network.size_multiple)
    overlaps = window_overlaps(model.windows, model.config.overlap, model.config.wide_overlap)
    voxels = seconds = 0.0
    with torch.inference_mode():
        for window, overlap in zip(windows, overlaps):
            took = forward_seconds(network, torch.randn(1, 1, *window, device=device))
            n = len(tile_slices(shape, window, overlap))
            voxels, seconds = voxels + n * np.prod(window), seconds + n * took
    return voxels / seconds


class Blank:
    """A uint8 source of zeros of a given shape: enough to plan the blocks without a volume."""

    def __init__(self, shape):
        self.shape, self.dtype = (1,) + tuple(shape), np.dtype(np.uint8)

    def read(self, zyx):
        return np.zeros((1,) + tuple(s.stop - s.start for s in zyx), np.uint8)


def windows_per_voxel(folder: Path, shape: tuple[int, int, int], fmt: str) -> float:
    """Voxels of all the windows predict runs over a volume of ``shape``, its blocks and halos included, per voxel.

    The output's chunks are what predict gives it: whole window steps for a Zarr array, the image's chunks for labels
    in an OME-Zarr image, none for a TIFF."""
    model = load_model(folder)
    chunks = {"zarr": output_chunks(model, shape), "ome.zarr": CHUNKS, "tif": None}[fmt]
    plan = plan_of(model, Blank(shape), chunks=chunks)
    total = 0
    for zyx in plan.blocks:
        read = tuple(s.stop - s.start for s in with_halo(zyx, plan.halo, shape, plan.extent)[0])
        for window, overlap in zip(
            inference_windows(plan.shapes, plan.patch, read, model.network.size_multiple), plan.overlaps
        ):
            total += len(tile_slices([max(r, w) for r, w in zip(read, window)], window, overlap)) * np.prod(window)
    return total / np.prod(shape)


def run_predict(folder: Path, volume: Path, out: Path) -> dict:
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "sparseseg",
        "predict",
        str(folder),
        str(volume),
        "-o",
        str(out),
        "--json",
        "--overwrite",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", result.stderr).group(1).strip()
    parts = [float(p) for p in wall.split(":")]
    summary["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    summary["peak_gb"] = peak / 2**20
    return summary


def run_predict_here(folder: Path, volume: Path, out: Path, device: str) -> dict:
    """`sparseseg.commands.workflows.predict` in this process: its wall time, windows and the GPU's peak memory."""
    import resource

    from sparseseg.commands.workflows import Outputs, predict

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    report = predict(folder, [volume], out, outputs=Outputs(overwrite=True), device=device)
    return dict(
        wall_s=time.perf_counter() - start,
        windows=[list(w) for w in report.windows],
        device_peak_gb=torch.cuda.max_memory_allocated() / 2**30,
        peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,256", help="volume sizes in M voxels")
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--axes", default="zyx", help="axes of the model's annotated planes (z: one inference pass)")
    parser.add_argument(
        "--format",
        choices=("zarr", "ome.zarr", "tif"),
        default="zarr",
        help="of the volume and the segmentation (a TIFF is memory-mapped: its pages count as resident; "
        "ome.zarr: the labels go into the image's labels/seg)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where predict and the bare network run (cuda: predict in this process, see above)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="the model's window overlap across its annotated planes (default: sparseseg's)",
    )
    parser.add_argument(
        "--wide-overlap",
        type=float,
        default=None,
        help="the model's window overlap along the other axes (default: sparseseg's)",
    )
    parser.add_argument("--out", default="scale_out")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="print how many window voxels predict would run per volume voxel, and run nothing",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    make_model(out / "model", args.base, args.axes, overlap=args.overlap, wide_overlap=args.wide_overlap)
    if args.plan_only:
        for size in (float(s) for s in args.sizes.split(",")):
            shape = volume_shape(size * 1e6)
            print(
                f"{size:g} M voxels {shape}: {windows_per_voxel(out / 'model', shape, args.format):.2f} window "
                "voxels per voxel"
            )
        return
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        volume = out / f"volume_{size:g}M.{args.format}"
        start = time.perf_counter()
        shape = make_volume(volume, size * 1e6)
        log.info("%g M voxels written to %s in %.0f s", size, volume, time.perf_counter() - start)
        before = bare_throughput(out / "model", shape, args.device)
        labels = volume / "labels" / "seg" if args.format == "ome.zarr" else out / f"seg_{size:g}M.{args.format}"
        if args.device == "cuda":
            run = run_predict_here(out / "model", volume, labels, args.device)
        else:
            run = run_predict(out / "model", volume, labels)
        after = bare_throughput(out / "model", shape, args.device)
        bare = (before + after) / 2
        voxels = float(np.prod(shape))
        rows.append(
            dict(
                shape=shape,
                voxels_m=voxels / 1e6,
                peak_gb=run["peak_gb"],
                wall_s=run["wall_s"],
                e2e_kvox_s=voxels / run["wall_s"] / 1e3,
                bare_kvox_s=bare / 1e3,
                bare_before_after=[round(before / 1e3, 1), round(after / 1e3, 1)],
                ratio=voxels / run["wall_s"] / bare,
                windows=run["windows"],
                windows_per_voxel=windows_per_voxel(out / "model", shape, args.format),
                device_peak_gb=run.get("device_peak_gb"),
            )
        )
        shutil.rmtree(volume) if volume.is_dir() else volume.unlink()
        print(json.dumps(rows[-1]), flush=True)
    overlaps = (
        f"overlap {args.overlap}, wide overlap {args.wide_overlap}"
        if (args.overlap, args.wide_overlap) != (None, None)
        else "default overlaps"
    )
    print(
        f"\nbase {args.base} model annotated on {args.axes}, {overlaps}, predict on {args.device}; peak memory, "
        "end-to-end and bare-network throughput (k voxels/s):"
    )
    for r in rows:
        print(
            f"{r['voxels_m']:8.1f} M voxels {str(r['shape']):>18}  peak {r['peak_gb']:.2f} GB  wall "
            f"{r['wall_s']:7.0f} s  "
            f"e2e {r['e2e_kvox_s']:6.1f}  bare {r['bare_kvox_s']:6.1f} (before {r['bare_before_after'][0]}, after "
            f"{r['bare_before_after'][1]})  ratio {r['ratio']:.3f}  "
            f"window voxels per voxel {r['windows_per_voxel']:.2f}"
            + ("" if r["device_peak_gb"] is None else f"  GPU peak {r['device_peak_gb']:.2f} GB")
        )
    if len(rows) > 1:
        peaks = [r["peak_gb"] for r in rows]
        print(f"peak memory spread: {100 * (max(peaks) / min(peaks) - 1):.1f} % between the sizes")
        if args.device == "cuda":
            gpu = [r["device_peak_gb"] for r in rows]
            print(f"GPU peak memory spread: {100 * (max(gpu) / min(gpu) - 1):.1f} % between the sizes")


if __name__ == "__main__":
    main()
