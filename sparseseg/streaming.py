"""The network over a volume of any size, block by block, in bounded memory.

Each block of the plan (`sparseseg.blocks.plan_blocks`) is read from the source with a halo
of half a window, normalised with statistics taken once from a sample, run through the
Gaussian sliding window (one pass per training patch shape, averaged), cropped and handed
to ``write``. The memory is one block and its halo, whatever the volume; on CUDA only the
block is on the device. A volume that fits one block takes the same steps as it always
did, so small volumes give the results they gave before blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from sparseseg.blocks import Block, Source, block_shape, plan_blocks, sample_planes, with_halo
from sparseseg.errors import InputError
from sparseseg.infer import predict_probabilities
from sparseseg.planning import inference_windows
from sparseseg.preprocess import intensity_stats, normalise_with

#: Memory for one block and its buffers, in bytes, unless the caller says otherwise.
BLOCK_BUDGET = 256 * 2**20

#: Called after each block as ``progress(voxels_done, voxels_total)``.
BlockProgress = Callable[[int, int], None]


def run_blocks(
    network: torch.nn.Module,
    source: Source,
    shapes: Mapping[str | None, Sequence[int]],
    patch: Sequence[int],
    write: Callable[[Block, np.ndarray], None],
    *,
    device: torch.device,
    overlap: float = 0.5,
    tta: bool = False,
    budget: float = BLOCK_BUDGET,
    progress: BlockProgress | None = None,
) -> list[tuple[int, int, int]]:
    """Class probabilities (K, z, y, x) of every block of ``source``, before any decision, handed to ``write(zyx, p)``.

    ``shapes`` are the training patches per annotated axis and ``patch`` the largest one
    (see `sparseseg.planning.inference_windows`). Returns the windows of the largest block.
    """
    shape = tuple(source.shape[1:])
    multiple = network.size_multiple
    classes = network.head.out_channels
    windows = inference_windows(shapes, patch, shape, multiple)
    largest = tuple(max(w[i] for w in windows) for i in range(3))
    per_voxel = 4 * (source.shape[0] + 3 * classes + 1)  # input, two probability buffers and the blend, the weights
    block = block_shape(shape, largest, per_voxel, budget)
    halo = tuple(0 if b >= s else w // 2 for b, s, w in zip(block, shape, largest))
    stats = intensity_stats(sample_planes(source))
    total, done = int(np.prod(shape)), 0
    for zyx in plan_blocks(shape, block):
        read, crop = with_halo(zyx, halo, shape)
        raw = source.read(read)
        if not np.isfinite(raw).all():
            raise InputError(f"the volume holds NaN or Inf values in block {_said(read)}")
        image = normalise_with(raw, stats)
        del raw
        probabilities = None
        passes = inference_windows(shapes, patch, image.shape[1:], multiple)
        try:
            for window in passes:
                p = predict_probabilities(network, image, window, device, overlap, tta=tta)
                probabilities = p if probabilities is None else np.add(probabilities, p, out=probabilities)
        except torch.OutOfMemoryError as exc:
            raise InputError("out of GPU memory: lower patch or batch_size (or use the CPU)", param="device", value="cuda") from exc
        probabilities /= len(passes)
        write(zyx, probabilities[(slice(None),) + crop])
        done += int(np.prod([s.stop - s.start for s in zyx]))
        if progress:
            progress(done, total)
    return windows


def _said(zyx: Block) -> str:
    return "z,y,x " + " ".join(f"{s.start}:{s.stop}" for s in zyx)
