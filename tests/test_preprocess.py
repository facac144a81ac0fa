"""Tests for sparseseg.preprocess: normalisation and patch shapes."""

import numpy as np
import pytest

from sparseseg import preprocess


def test_normalise_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(100, 10, (6, 8, 8)), rng.normal(-3, 0.1, (6, 8, 8))]).astype(np.float32)
    out = preprocess.normalise(image)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_normalise_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (1, 10, 20, 20)).astype(np.float32)
    spiked = image.copy()
    spiked[0, 0, 0, 0] = 1e9
    out, out_spiked = preprocess.normalise(image), preprocess.normalise(spiked)
    assert np.abs(out_spiked).max() < 10
    np.testing.assert_allclose(out_spiked.ravel()[1:], out.ravel()[1:], atol=0.05)


def test_normalise_constant_channel_gives_zeros():
    out = preprocess.normalise(np.full((1, 3, 4, 5), 7.0, dtype=np.float32))
    assert np.all(out == 0)


def test_normalise_needs_channels():
    with pytest.raises(ValueError):
        preprocess.normalise(np.zeros((3, 4, 5), dtype=np.float32))


def test_anisotropy():
    assert preprocess.anisotropy(None) == (1.0, 1.0, 1.0)
    assert preprocess.anisotropy((50, 4, 4)) == (12.5, 1.0, 1.0)
    assert preprocess.anisotropy((1, 2, 4)) == (1.0, 2.0, 4.0)


def test_default_patch_follows_spacing_and_volume():
    # isotropic: a 64^3 cube
    assert preprocess.default_patch((100, 300, 300), None, (8, 8, 8)) == (64, 64, 64)
    # 50x4x4 nm: the same number of voxels as a cube in physical space, 12 sections of 152x152
    patch = preprocess.default_patch((40, 500, 500), (50, 4, 4), (1, 8, 8))
    assert patch == (12, 152, 152)
    assert abs(np.prod(patch) / 64**3 - 1) < 0.1
    # a volume smaller than the patch: the patch shrinks to it, rounded up to the multiple
    patch = preprocess.default_patch((12, 24, 20), None, (8, 8, 8))
    assert patch == (16, 24, 24)
    for p, m in zip(preprocess.default_patch((30, 70, 90), (3, 1, 1), (2, 8, 8)), (2, 8, 8)):
        assert p % m == 0


def test_thin_depths_are_equal_in_physical_space():
    assert preprocess.thin_depths(16, None, (8, 8, 8), (64, 64, 64)) == (16, 16, 16)
    # 12.5x thicker sections: 16 pixels of 4 nm are 1.3 sections, raised to the plane and its neighbours
    assert preprocess.thin_depths(16, (50, 4, 4), (1, 8, 8), (12, 152, 152)) == (3, 16, 16)
    # 3x thicker sections pooled by 2: 16 / 3 = 5.3 -> the nearest multiple of 2
    assert preprocess.thin_depths(16, (3, 1, 1), (2, 8, 8), (22, 64, 64)) == (6, 16, 16)
    # rounded to the network's multiple, never deeper than the patch
    assert preprocess.thin_depths(12, None, (8, 8, 8), (64, 64, 64)) == (16, 16, 16)
    assert preprocess.thin_depths(32, None, (8, 8, 8), (64, 24, 64)) == (32, 24, 32)


def test_inference_patch():
    assert preprocess.inference_patch((16, 64, 64), (100, 300, 300), (8, 8, 8)) == (32, 128, 128)
    assert preprocess.inference_patch((16, 64, 64), (20, 100, 300), (8, 8, 8)) == (24, 104, 128)


def test_inference_windows_keep_the_training_depth_across_thin_axes():
    # as deep as training across z; as many voxels as twice the 12x152x152 patch: 4x wider, within the volume
    assert preprocess.inference_windows({"z": (3, 152, 152)}, (12, 152, 152), (30, 512, 512), (1, 8, 8)) == [(3, 512, 512)]
    assert preprocess.inference_windows({"z": (3, 152, 152)}, (12, 152, 152), (30, 900, 900), (1, 8, 8)) == [(3, 608, 608)]
    # one pass per annotated axis; z: the volume needs no more than 104
    windows = preprocess.inference_windows({"z": (16, 64, 64), "x": (64, 64, 16)}, (64, 64, 64), (100, 300, 300), (8, 8, 8))
    assert windows == [(16, 256, 256), (104, 256, 16)]
    # cube patches: twice the patch, no larger than the volume needs
    assert preprocess.inference_windows({None: (16, 64, 64)}, (16, 64, 64), (20, 100, 300), (8, 8, 8)) == [(24, 104, 128)]
