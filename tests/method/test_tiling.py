"""Tests for sparseseg.method.tiling: window positions, blending weights, shapes."""

import numpy as np
import pytest

from sparseseg.method import tiling


@pytest.mark.parametrize(
    "size, patch, overlap",
    [(10, 4, 0.5), (7, 7, 0.0), (100, 16, 0.5), (17, 16, 0.5), (33, 8, 0.0), (5, 1, 0.9), (64, 32, 0.25), (9, 2, 0.0)],
)
def test_tile_starts_cover_the_axis(size, patch, overlap):
    starts = tiling.tile_starts(size, patch, overlap)
    assert starts[0] == 0
    assert starts[-1] == size - patch
    assert starts == sorted(set(starts))
    covered = np.zeros(size, dtype=bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()
    # windows overlap at least as requested (up to rounding)
    if len(starts) > 1:
        assert max(np.diff(starts)) <= max(1, int(patch * (1 - overlap))) + 1


def test_more_overlap_more_windows():
    assert (
        len(tiling.tile_starts(100, 16, 0.75))
        > len(tiling.tile_starts(100, 16, 0.5))
        > len(tiling.tile_starts(100, 16, 0.0))
    )


def test_no_overlap_on_an_exact_fit():
    assert tiling.tile_starts(64, 16, 0.0) == [0, 16, 32, 48]


@pytest.mark.parametrize("size, patch, overlap", [(4, 8, 0.5), (8, 0, 0.5), (8, 4, 1.0), (8, 4, -0.1)])
def test_tile_starts_reject(size, patch, overlap):
    with pytest.raises(ValueError):
        tiling.tile_starts(size, patch, overlap)


@pytest.mark.parametrize("shape, patch", [((9, 13, 17), (4, 8, 8)), ((8, 8, 8), (8, 8, 8)), ((5, 30, 7), (5, 16, 2))])
@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_tile_slices_cover_every_voxel(shape, patch, overlap):
    windows = tiling.tile_slices(shape, patch, overlap)
    count = np.zeros(shape, dtype=int)
    for window in windows:
        assert len(window) == 3
        assert tuple(s.stop - s.start for s in window) == patch
        assert all(0 <= s.start and s.stop <= n for s, n in zip(window, shape))
        count[window] += 1
    assert count.min() >= 1
    n_expected = np.prod([len(tiling.tile_starts(s, p, overlap)) for s, p in zip(shape, patch)])
    assert len(windows) == n_expected == len({tuple((s.start, s.stop) for s in w) for w in windows})


def test_tile_slices_reject_mismatched_lengths():
    with pytest.raises(ValueError):
        tiling.tile_slices((8, 8, 8), (4, 4))


@pytest.mark.parametrize("patch", [(8, 16, 16), (7, 9, 11), (1, 4, 4)])
def test_gaussian_weight(patch):
    weight = tiling.gaussian_weight(patch)
    assert weight.shape == patch and weight.dtype == np.float32
    assert weight.max() == pytest.approx(1.0)
    assert weight.min() >= 1e-3
    centre = tuple((p - 1) // 2 for p in patch)
    assert weight[centre] == weight.max()
    # falls off from the centre along each axis and is symmetric
    for axis in range(3):
        line = np.moveaxis(weight, axis, 0)[(slice(None),) + tuple(c for i, c in enumerate(centre) if i != axis)]
        half = line[: centre[axis] + 1]
        assert np.all(np.diff(half) >= 0)
        np.testing.assert_allclose(line, line[::-1], rtol=1e-6)
    if min(patch) > 2:
        assert weight[0, 0, 0] < weight[centre]


def test_gaussian_weight_rejects_bad_sigma():
    with pytest.raises(ValueError):
        tiling.gaussian_weight((4, 4, 4), sigma_scale=0)


def test_tile_slices_take_an_overlap_per_axis():
    windows = tiling.tile_slices((16, 64, 64), (4, 32, 32), (0.5, 0.0, 0.25))
    starts = [sorted({w[i].start for w in windows}) for i in range(3)]
    assert starts == [tiling.tile_starts(16, 4, 0.5), [0, 32], tiling.tile_starts(64, 32, 0.25)]
    assert len(windows) == np.prod([len(s) for s in starts])


def test_tile_slices_reject_an_overlap_per_axis_of_the_wrong_length():
    with pytest.raises(ValueError, match="one value per axis"):
        tiling.tile_slices((8, 8, 8), (4, 4, 4), (0.5, 0.5))


def test_tile_step():
    assert tiling.tile_step(16, 0.5) == 8
    assert tiling.tile_step(224, 0.25) == 168
    assert tiling.tile_step(3, 0.5) == 1  # never 0
