"""Tests for sparseseg.method.augment: image, labels and weights must stay aligned."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from sparseseg.method import augment
from sparseseg.method.augment import AugmentParams

STRONG = AugmentParams(flip=True, rot90=True, rotate_deg=30.0, scale=0.3, deform_sigma=3.0, deform_grid=8, gray=0.0)
OFF = AugmentParams(flip=False, rot90=False, rotate_deg=0.0, scale=0.0, deform_sigma=0.0, gray=0.0)


def _coordinate_crop(crop, batch):
    """Image channels = the voxel's (z, y, x) coordinates; target = the voxel's flat index; weight 1."""
    grids = torch.meshgrid(*(torch.arange(c, dtype=torch.float32) for c in crop), indexing="ij")
    image = torch.stack(grids)[None].repeat(batch, 1, 1, 1, 1)
    flat = torch.arange(int(np.prod(crop))).reshape(crop)
    return image, flat[None].repeat(batch, 1, 1, 1), torch.ones((batch,) + crop)


def _decode(target, crop):
    _, y, x = crop
    return torch.stack([target // (y * x), target // x % y, target % x], dim=1).float()


def test_image_and_labels_read_through_the_same_coordinates():
    """Trilinear sampling of a linear image gives the exact sampling position; nearest sampling of
    the flat index gives the nearest voxel. Both must agree to half a voxel on every axis."""
    crop, patch = (20, 40, 40), (12, 24, 24)
    image, target, weight = _coordinate_crop(crop, batch=4)
    generator = torch.Generator().manual_seed(0)
    out_image, out_target, out_weight = augment.apply(image, target, weight, patch, STRONG, generator)
    assert out_image.shape == (4, 3) + patch
    assert out_target.shape == out_weight.shape == (4,) + patch
    assert out_target.dtype == torch.int64
    inside = out_weight > 0
    assert inside.float().mean() > 0.9
    sampled = out_image.movedim(1, -1)[inside]
    nearest = _decode(out_target, crop).movedim(1, -1)[inside]
    assert (sampled - nearest).abs().max() <= 0.5 + 1e-4
    # and the augmentation did move things: this is no plain centre crop
    centre = augment.apply(image, target, weight, patch, None, generator)[0]
    assert (out_image - centre).abs().mean() > 1.0


def test_piecewise_constant_image_matches_labels():
    """An image equal to the label index in big blocks: away from block borders (where trilinear
    interpolation mixes blocks) the augmented image equals the augmented label."""
    crop, patch = (24, 48, 48), (16, 32, 32)
    index = torch.stack(torch.meshgrid(*(torch.arange(c) // 12 for c in crop), indexing="ij"))
    target = ((index[0] * 7 + index[1] * 3 + index[2]) % 5)[None].repeat(2, 1, 1, 1)
    weight = torch.ones((2,) + crop)
    weight[:, :, :, :4] = 0  # an unlabeled band
    generator = torch.Generator().manual_seed(1)
    image, target_out, weight_out = augment.apply(target.float()[:, None], target, weight, patch, STRONG, generator)
    labelled = weight_out > 0
    assert labelled.sum() > 0.5 * labelled.numel()
    assert set(torch.unique(weight_out).tolist()) <= {0.0, 1.0}
    agree = (image[:, 0] - target_out.float()).abs() < 1e-3
    assert agree[labelled].float().mean() > 0.7
    # the check can tell: labels that drifted (here: mirrored) agree far less often
    drifted = (image[:, 0] - target_out.flip(-1).float()).abs() < 1e-3
    assert drifted[labelled].float().mean() < 0.4


def test_no_augmentation_grid_is_the_centre_crop():
    crop, patch = (12, 20, 20), (8, 12, 12)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((2, 2) + crop, generator=generator)
    target = torch.randint(0, 3, (2,) + crop, generator=generator)
    weight = torch.rand((2,) + crop, generator=generator)
    centre = tuple(slice((c - p) // 2, (c - p) // 2 + p) for c, p in zip(crop, patch))
    out = augment.apply(image, target, weight, patch, OFF, generator)
    torch.testing.assert_close(out[0], image[(Ellipsis,) + centre], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], target[(Ellipsis,) + centre])
    torch.testing.assert_close(out[2], weight[(Ellipsis,) + centre])


def test_params_none_gives_a_centre_crop():
    crop, patch = (10, 17, 20), (4, 8, 8)
    image = torch.rand((1, 1) + crop)
    target = torch.randint(0, 4, (1,) + crop)
    weight = torch.rand((1,) + crop)
    out_image, out_target, out_weight = augment.apply(image, target, weight, patch, None, torch.Generator())
    start = [(c - p) // 2 for c, p in zip(crop, patch)]
    window = tuple(slice(s, s + p) for s, p in zip(start, patch))
    assert torch.equal(out_image, image[(Ellipsis,) + window])
    assert torch.equal(out_target, target[(Ellipsis,) + window])
    assert torch.equal(out_weight, weight[(Ellipsis,) + window])


def test_voxels_from_outside_the_crop_get_weight_zero():
    crop = patch = (8, 16, 16)  # no margin: zooming out samples outside the crop
    image, target, weight = _coordinate_crop(crop, batch=8)
    params = AugmentParams(flip=False, rot90=False, rotate_deg=0.0, scale=0.5, deform_sigma=0.0, gray=0.0)
    _, _, out_weight = augment.apply(image, target, weight, patch, params, torch.Generator().manual_seed(3))
    assert (out_weight == 0).any()
    assert (out_weight == 1).any()


def test_gray_value_change_is_affine_per_channel():
    crop = patch = (8, 8, 8)
    image, target, weight = _coordinate_crop(crop, batch=3)
    params = AugmentParams(flip=False, rot90=False, rotate_deg=0.0, scale=0.0, deform_sigma=0.0, gray=0.5)
    out, _, _ = augment.apply(image, target, weight, patch, params, torch.Generator().manual_seed(0))
    for b in range(3):
        for c in range(3):
            x, y = image[b, c].ravel().numpy(), out[b, c].ravel().numpy()
            slope, shift = np.polyfit(x, y, 1)
            np.testing.assert_allclose(y, slope * x + shift, atol=1e-4)
            assert 0.5 <= slope <= 1.5 and -0.5 <= shift <= 0.5
            assert not (slope == 1 and shift == 0)


def test_same_seed_same_output():
    crop, patch = (16, 32, 32), (8, 16, 16)
    image, target, weight = _coordinate_crop(crop, batch=2)
    params = AugmentParams(gray=0.2, deform_grid=8)
    a = augment.apply(image, target, weight, patch, params, torch.Generator().manual_seed(5))
    b = augment.apply(image, target, weight, patch, params, torch.Generator().manual_seed(5))
    c = augment.apply(image, target, weight, patch, params, torch.Generator().manual_seed(6))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("size, spacing", [(64, 32), (37, 8), (16, 4), (5, 32)])
def test_bspline_matrix_is_a_partition_of_unity(size, spacing):
    matrix = augment.bspline_matrix(size, spacing)
    assert matrix.shape[0] == size
    assert (matrix >= 0).all()
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(size), atol=1e-6, rtol=0)
    # each point is influenced by exactly 4 control points (3 at integer positions, where one weight is 0)
    assert ((matrix > 0).sum(dim=1) <= 4).all() and ((matrix > 0).sum(dim=1) >= 3).all()


def _cubic_bspline(t):
    t = abs(t)
    return 2 / 3 - t**2 + t**3 / 2 if t < 1 else ((2 - t) ** 3 / 6 if t < 2 else 0.0)


def test_deformation_std_follows_sigma():
    """Control points have standard deviation sigma; the interpolated field has sigma times
    sqrt(integral of B(t)^2)^3, about 0.33 sigma, per axis (independent of the grid spacing)."""
    squared = quad(lambda t: _cubic_bspline(t) ** 2, -2, 2)[0]
    ratio = np.sqrt(squared**3)
    sigma = (1.0, 2.0, 4.0)
    field = augment.deformation(64, (16, 16, 16), sigma, 4, torch.Generator().manual_seed(0), "cpu")
    assert field.shape == (64, 3, 16, 16, 16)
    rms = field.pow(2).mean(dim=(0, 2, 3, 4)).sqrt().numpy()
    np.testing.assert_allclose(rms / np.array(sigma), ratio, rtol=0.1)
    # smooth: neighbouring voxels move almost together
    assert (field[..., 1:] - field[..., :-1]).abs().mean() < 0.5 * field.abs().mean()  # white noise: ~1.1


def test_anisotropy_shrinks_displacements_along_the_coarse_axis():
    crop = patch = (8, 16, 16)
    params = AugmentParams(
        flip=False, rot90=False, rotate_deg=0.0, scale=0.0, deform_sigma=4.0, deform_grid=4, gray=0.0
    )
    generator = torch.Generator().manual_seed(0)
    identity = augment.sampling_grid(16, patch, crop, OFF, generator, "cpu")
    iso = augment.sampling_grid(16, patch, crop, params, torch.Generator().manual_seed(0), "cpu")
    aniso = augment.sampling_grid(
        16, patch, crop, params, torch.Generator().manual_seed(0), "cpu", anisotropy=(1.5, 1.0, 1.0)
    )
    # grid_sample order (x, y, z): z is the last coordinate; displacement in voxels = normalised * size / 2
    dz_iso = ((iso - identity)[..., 2] * crop[0] / 2).abs().mean()
    dz_aniso = ((aniso - identity)[..., 2] * crop[0] / 2).abs().mean()
    dx_iso = ((iso - identity)[..., 0] * crop[2] / 2).abs().mean()
    dx_aniso = ((aniso - identity)[..., 0] * crop[2] / 2).abs().mean()
    torch.testing.assert_close(dz_aniso, dz_iso / 1.5, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dx_aniso, dx_iso)


def test_sections_of_a_coarse_axis_are_never_blended():
    """Sections 12.5x thicker than the pixels: scaling and deformation act within each section only."""
    crop, patch = (9, 40, 40), (3, 16, 16)
    params = AugmentParams(rotate_deg=15.0, scale=0.3, deform_sigma=4.0, deform_grid=8)
    grid = augment.sampling_grid(
        32, patch, crop, params, torch.Generator().manual_seed(0), "cpu", anisotropy=(12.5, 1.0, 1.0)
    )
    z = (grid[..., 2] + 1) * crop[0] / 2 - 0.5  # voxel coordinate along z in the crop
    centre = (crop[0] - 1) / 2
    torch.testing.assert_close(z[:, 1], torch.full_like(z[:, 1], centre))  # the annotated (centre) section stays whole
    torch.testing.assert_close(z, z.round())  # every output plane is one input section
    xy = (grid[..., :2] + 1) * torch.tensor([crop[2], crop[1]]) / 2 - 0.5
    assert (xy - xy.round()).abs().mean() > 0.1  # within the sections things did move


def test_margin_grows_with_strength():
    patch = (16, 64, 64)
    none = augment.margin(patch, AugmentParams(rotate_deg=0.0, scale=0.0, deform_sigma=0.0))
    strong = augment.margin(patch, AugmentParams())
    assert none == (0, 0, 0)
    assert all(s > 0 for s in strong)
    assert strong[1] > strong[0]
