"""Sliding-window prediction over a whole volume, blended with Gaussian weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.method.progress import checkpoint
from sparseseg.method.tiling import gaussian_weight, tile_slices


def sliding_window(
    image: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    out_channels: int,
    patch: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 1,
    needed: np.ndarray | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping patches of ``image`` and blend the outputs.

    Parameters
    ----------
    image : tensor (C, Z, Y, X)
        The volume, on the device where ``fn`` runs. Axes smaller than ``patch`` are padded
        with zeros and the padding is cut off the result.
    fn : callable
        Maps a (B, C, *patch) batch to a (B, out_channels, *patch) output.
    out_channels : int
        Channels of ``fn``'s output.
    patch : (int, int, int)
        Window shape.
    overlap : float or (float, float, float)
        Fraction of the window shared by neighbouring windows: one for every axis, or one per axis.
    batch_size : int
        Windows per call of ``fn``.
    needed : ndarray of bool (Z, Y, X), optional
        Run only the windows that hold a voxel marked here: those voxels get exactly what a
        full run gives them (the same windows, in the same order); the others are not valid.

    Returns
    -------
    tensor (out_channels, Z, Y, X), float32
        Each voxel is the Gaussian-weighted mean of the outputs of the windows covering it.
    """
    shape = tuple(image.shape[1:])
    padded = tuple(max(s, p) for s, p in zip(shape, patch))
    if padded != shape:
        pads = [v for s, p in zip(reversed(shape), reversed(padded)) for v in (0, p - s)]
        image = F.pad(image, pads)
    device = image.device
    weight = torch.from_numpy(gaussian_weight(patch)).to(device)
    out = torch.zeros((out_channels,) + padded, dtype=torch.float32, device=device)
    norm = torch.zeros(padded, dtype=torch.float32, device=device)
    windows = tile_slices(padded, patch, overlap)
    if needed is not None:
        needed = np.pad(needed, [(0, p - s) for s, p in zip(shape, padded)])
        windows = [w for w in windows if needed[w].any()]
        norm += 1e-30  # voxels no window covers are not valid, but not NaN
    for start in range(0, len(windows), batch_size):
        checkpoint()  # a cancelled run ends between windows
        chunk = windows[start : start + batch_size]
        batch = torch.stack([image[(slice(None),) + w] for w in chunk])
        result = fn(batch).float()
        for w, r in zip(chunk, result):
            out[(slice(None),) + w] += r * weight
            norm[w] += weight
    out /= norm
    return out[(slice(None),) + tuple(slice(0, s) for s in shape)]


def flips(tta: bool) -> list[tuple[int, ...]]:
    """Spatial axes (of a (B, C, Z, Y, X) batch) to flip for test-time augmentation."""
    if not tta:
        return [()]
    return [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int],
    device: torch.device,
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 1,
    tta: bool = False,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities (K, Z, Y, X), float32, of a normalised (C, Z, Y, X) image (valid on ``needed``, see
    `sliding_window`)."""
    model = model.to(device, memory_format=torch.channels_last_3d).eval()
    n_classes = model.head.out_channels
    amp = device.type == "cuda"

    def fn(batch: torch.Tensor) -> torch.Tensor:
        total = 0
        for axes in flips(tta):
            x = (batch.flip(axes) if axes else batch).contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                p = torch.softmax(model(x).float(), dim=1)
            total = total + (p.flip(axes) if axes else p)
        return total / len(flips(tta))

    with torch.inference_mode():
        tensor = torch.from_numpy(image).to(device)
        probabilities = sliding_window(tensor, fn, n_classes, patch, overlap, batch_size, needed)
    return probabilities.cpu().numpy()
