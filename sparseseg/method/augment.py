"""Augmentation on the training device, applied identically to image, labels and weights.

One sampling grid is built per patch and used to resample the image (trilinear), the class
targets and the weight map (nearest). So image and labels cannot drift apart: they are
read through the same coordinates. The grid combines random flips, in-plane (y, x)
rotations by multiples of 90 degrees plus a small angle, isotropic scaling, and the paper's
smooth dense deformation: random displacement vectors on a coarse grid (32 voxels apart,
standard deviation 4 voxels) interpolated with cubic B-splines. Gray values get a random
per-channel contrast and brightness change afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparseseg.method.planning import COARSE


@dataclass(frozen=True)
class AugmentParams:
    """Strength of each augmentation (0 or False switches one off).

    Attributes
    ----------
    flip : bool
        Random flips along each axis.
    rot90 : bool
        Random multiples of 90 degrees in the (y, x) plane (only for square y, x patches).
    rotate_deg : float
        Largest extra in-plane rotation, degrees.
    scale : float
        Scaling factor drawn from [1 - scale, 1 + scale].
    deform_sigma : float
        Standard deviation of the control-point displacements, in voxels of the finest axis.
    deform_grid : int
        Distance between control points, in voxels.
    gray : float
        Contrast factor from [1 - gray, 1 + gray] and brightness shift from [-gray, gray] (in std units).
    """

    flip: bool = True
    rot90: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.15
    deform_sigma: float = 4.0
    deform_grid: int = 32
    gray: float = 0.15


def margin(patch: tuple[int, int, int], params: AugmentParams) -> tuple[int, int, int]:
    """Context to crop around a patch so that rotation, scaling and deformation rarely reach past it."""
    reach = params.scale + math.sin(math.radians(params.rotate_deg))
    return tuple(int(math.ceil(reach * p / 2 + 3 * params.deform_sigma)) for p in patch)


def bspline_matrix(size: int, spacing: int, device=None) -> torch.Tensor:
    """(size, n) matrix that evaluates a cubic B-spline with control points ``spacing`` apart."""
    t = torch.arange(size, dtype=torch.float32, device=device) / spacing
    i = torch.floor(t)
    f = (t - i).unsqueeze(1)
    basis = torch.cat([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], dim=1) / 6
    n = int(i.max().item()) + 4
    matrix = torch.zeros(size, n, device=device)
    columns = i.long().unsqueeze(1) + torch.arange(4, device=device)
    return matrix.scatter_(1, columns, basis)


def deformation(batch: int, patch, sigma, spacing: int, generator: torch.Generator, device) -> torch.Tensor:
    """Smooth random displacement field (batch, 3, Z, Y, X) in voxels; ``sigma`` per axis (z, y, x)."""
    mz, my, mx = (bspline_matrix(p, spacing, device) for p in patch)
    control = torch.randn(batch, 3, mz.shape[1], my.shape[1], mx.shape[1], generator=generator, device=device)
    control = control * torch.tensor(sigma, device=device).view(1, 3, 1, 1, 1)
    return torch.einsum("zi,yj,xk,bcijk->bczyx", mz, my, mx, control)


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def sampling_grid(
    batch: int,
    patch: tuple[int, int, int],
    crop: tuple[int, int, int],
    params: AugmentParams,
    generator: torch.Generator,
    device,
    anisotropy: tuple[float, float, float] = (1.0, 1.0, 1.0),
    normal: int = 0,
) -> torch.Tensor:
    """Random sampling grid (batch, Z, Y, X, 3) in ``grid_sample``'s normalised coordinates.

    The output patch of shape ``patch`` is taken from the centre of a crop of shape ``crop``.
    ``anisotropy`` is the voxel size relative to the finest axis: displacements along an
    axis are smaller in voxels by that factor, and an axis at least `sparseseg.method.planning.COARSE` times coarser
    than the finest (the sections of an EM stack) is neither scaled nor deformed, so every
    output plane along it is one whole input section, as annotated, never a blend of two.
    Rotations turn about axis ``normal`` (0 = z: in the (y, x) plane), and only where the
    two axes of that plane have the same voxel size; 90-degree turns also need the same
    patch size along both.
    """
    coords = torch.stack(
        torch.meshgrid(
            *(torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2 for p in patch), indexing="ij"
        )
    )  # (3, Z, Y, X), centred
    coords = coords.unsqueeze(0).expand(batch, -1, -1, -1, -1)
    matrix = torch.eye(3, device=device).repeat(batch, 1, 1)
    a, b = (i for i in range(3) if i != normal)
    if anisotropy[a] == anisotropy[b]:
        angle = _uniform(batch, -1, 1, generator, device) * math.radians(params.rotate_deg)
        if params.rot90 and patch[a] == patch[b]:
            angle = angle + torch.randint(0, 4, (batch,), generator=generator, device=device) * (math.pi / 2)
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix[:, a, a], matrix[:, a, b], matrix[:, b, a], matrix[:, b, b] = cos, -sin, sin, cos
    fine = torch.tensor(
        [float(r < COARSE) for r in anisotropy], device=device
    )  # 1: an axis that is scaled and deformed
    if params.scale:
        factor = _uniform(batch, 1 - params.scale, 1 + params.scale, generator, device).view(batch, 1)
        matrix = matrix * (1 + (factor - 1) * fine).view(batch, 3, 1)
    if params.flip:
        signs = torch.randint(0, 2, (batch, 3), generator=generator, device=device) * 2 - 1
        matrix = matrix * signs.view(batch, 1, 3)
    coords = torch.einsum("bij,bjzyx->bizyx", matrix, coords)
    if params.deform_sigma:
        sigma = [params.deform_sigma / r if r < COARSE else 0.0 for r in anisotropy]
        coords = coords + deformation(batch, patch, sigma, params.deform_grid, generator, device)
    size = torch.tensor(crop, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1)
    normalised = (coords + (size - 1) / 2 + 0.5) / size * 2 - 1  # align_corners=False convention
    return normalised.flip(1).permute(0, 2, 3, 4, 1)  # grid_sample wants (x, y, z) last


def apply(
    image: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    patch: tuple[int, int, int],
    params: AugmentParams | None,
    generator: torch.Generator,
    anisotropy: tuple[float, float, float] = (1.0, 1.0, 1.0),
    normal: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch of crops and cut the centre patch out of each.

    Parameters
    ----------
    image : (B, C, *crop) float tensor
    target : (B, *crop) integer tensor of class indices
    weight : (B, *crop) float tensor, 0 on unlabeled voxels
    patch : shape of the output patches
    params : augmentation strengths, or None for a plain centre crop
    normal : the axis to rotate about (see `sampling_grid`)

    Returns the image (B, C, *patch), target (B, *patch) and weight (B, *patch); voxels
    sampled from outside the crop get weight 0.
    """
    crop = tuple(image.shape[2:])
    if params is None:
        index = (Ellipsis,) + tuple(slice((c - p) // 2, (c - p) // 2 + p) for c, p in zip(crop, patch))
        return image[index], target[index], weight[index]
    grid = sampling_grid(image.shape[0], patch, crop, params, generator, image.device, anisotropy, normal)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = torch.stack([target.float(), weight], dim=1)
    labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if params.gray:
        shape = (image.shape[0], image.shape[1], 1, 1, 1)
        contrast = _uniform(image.shape[0] * image.shape[1], 1 - params.gray, 1 + params.gray, generator, image.device)
        shift = _uniform(image.shape[0] * image.shape[1], -params.gray, params.gray, generator, image.device)
        image = image * contrast.view(shape) + shift.view(shape)
    return image, labels[:, 0].round().long(), labels[:, 1]
