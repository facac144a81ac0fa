"""Tests for sparseseg.method.preprocess: normalisation, and the planes its statistics are taken from."""

import numpy as np
import pytest

from sparseseg.io.blocks import ArraySource
from sparseseg.method import preprocess


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


def test_sample_is_the_whole_volume_when_small_and_whole_planes_when_large():
    data = np.random.default_rng(0).random((1, 6, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(preprocess.sample_planes(ArraySource(data)), data)
    sample = preprocess.sample_planes(ArraySource(data), voxels=2 * 64)
    assert sample.shape == (1, 2, 8, 8)
    np.testing.assert_array_equal(sample[:, 0], data[:, 0])
