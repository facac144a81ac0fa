"""What the sliding window costs beyond the network: blended prediction vs. bare forward passes on the same tiles.

    python benchmarks/window_overhead.py [--shape 20,256,256] [--base 8] [--repeat 3]

Both are timed in one run, alternating, and the best of --repeat is kept (the machine is shared
and noisy: compare the ratio, not the seconds). Target: overhead at most 10 %.
"""

import argparse
import time

import numpy as np
import torch

from sparseseg.method.network import UNet3D
from sparseseg.method.planning import inference_patch, pooling_kernels
from sparseseg.method.sliding_window import predict_probabilities
from sparseseg.method.tiling import tile_slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="20,256,256")
    parser.add_argument("--spacing", default="50,4.6,4.6")
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = tuple(float(v) for v in args.spacing.split(","))
    torch.manual_seed(0)
    model = UNet3D(1, 5, args.base, pooling_kernels(spacing, 3)).eval()
    model = model.to(memory_format=torch.channels_last_3d)
    image = np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32)
    window = inference_patch((5, 64, 64), shape, model.size_multiple)
    tiles = tile_slices(shape, window, 0.5)
    device = torch.device("cpu")

    def bare() -> None:
        with torch.inference_mode():
            for t in tiles:
                x = torch.from_numpy(image[(slice(None),) + t][None]).contiguous(memory_format=torch.channels_last_3d)
                torch.softmax(model(x), dim=1)

    def blended() -> None:
        predict_probabilities(model, image, window, device, overlap=0.5)

    best = {"bare": np.inf, "sliding window": np.inf}
    for _ in range(args.repeat):
        for name, fn in (("bare", bare), ("sliding window", blended)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    overhead = best["sliding window"] / best["bare"] - 1
    print(f"volume {shape}, window {window}, {len(tiles)} tiles, base {args.base}, {torch.get_num_threads()} threads")
    print(
        f"bare forward on the tiles: {best['bare']:.2f} s; sliding window with blending: {best['sliding window']:.2f} s"
    )
    print(f"overhead {overhead:+.1%} (target <= +10%)")


if __name__ == "__main__":
    main()
