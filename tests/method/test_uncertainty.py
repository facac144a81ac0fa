"""Tests for sparseseg.method.uncertainty: predictive entropy, per-plane uncertainty and the ranking of planes to
annotate."""

import numpy as np
import pytest

from sparseseg.method.uncertainty import Suggestion, entropy, plane_uncertainty, rank_planes

SHAPE = (6, 10, 14)


def _confident(k=3, shape=SHAPE, p=0.9):
    """(K, Z, Y, X) probabilities: class 0 with probability ``p`` everywhere, the rest shared evenly."""
    probs = np.full((k,) + shape, (1 - p) / (k - 1), np.float32)
    probs[0] = p
    return probs


def _uncertainty(z=(), y=(), x=()):
    """An uncertainty dict with the given per-plane values (empty axes allowed)."""
    return {a: np.asarray(v, dtype=np.float64) for a, v in zip("zyx", (z, y, x))}


# --- entropy -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_entropy_is_zero_for_one_hot(k):
    labels = np.random.default_rng(0).integers(0, k, SHAPE)
    one_hot = np.moveaxis(np.eye(k, dtype=np.float32)[labels], -1, 0)
    h = entropy(one_hot)
    assert h.shape == SHAPE
    np.testing.assert_allclose(h, 0, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_entropy_is_one_for_uniform(k):
    h = entropy(np.full((k,) + SHAPE, 1 / k, np.float32))
    np.testing.assert_allclose(h, 1, rtol=1e-5)


def test_entropy_lies_between_zero_and_one_and_orders_certainty():
    probs = np.random.default_rng(1).dirichlet(np.ones(4), size=SHAPE).astype(np.float32)
    h = entropy(np.moveaxis(probs, -1, 0))
    assert h.min() >= 0 and h.max() <= 1 + 1e-6
    assert entropy(_confident(p=0.99)).max() < entropy(_confident(p=0.6)).min()


def test_entropy_accepts_uint8_scale_after_division():
    """densify writes probabilities as uint8 0..255; suggest divides them by 255."""
    scaled = np.round(np.full((3,) + SHAPE, 1 / 3) * 255).astype(np.uint8)
    np.testing.assert_allclose(entropy(scaled.astype(np.float32) / 255), 1, rtol=1e-5)


@pytest.mark.parametrize(
    "probs",
    [np.full(SHAPE, 0.5), np.full((1,) + SHAPE, 1.0), np.full((2, 4, 5), 0.5), np.full((2, 1) + SHAPE, 0.5)],
    ids=["3d", "one-class", "2d-volume", "5d"],
)
def test_entropy_refuses_bad_shapes(probs):
    with pytest.raises(ValueError, match="K, Z, Y, X"):
        entropy(probs)


# --- plane_uncertainty ---------------------------------------------------------------------


@pytest.mark.parametrize("axis, index", [("z", 4), ("y", 7), ("x", 0), ("x", 13)])
def test_plane_uncertainty_finds_the_uniform_plane(axis, index):
    probs = _confident()
    where = [slice(None)] * 4
    where[1 + "zyx".index(axis)] = index
    probs[tuple(where)] = 1 / 3
    u = plane_uncertainty(probs)
    assert set(u) == {"z", "y", "x"}
    assert [len(u[a]) for a in "zyx"] == list(SHAPE)
    assert int(np.argmax(u[axis])) == index
    assert u[axis][index] == pytest.approx(1, rel=1e-5)
    background = entropy(_confident())[0, 0, 0]
    others = np.delete(u[axis], index)
    np.testing.assert_allclose(others, background, rtol=1e-5)
    # The other axes each see the uniform plane as one line through every one of their planes.
    n = SHAPE["zyx".index(axis)]
    for a in "zyx".replace(axis, ""):
        np.testing.assert_allclose(u[a], (1 + (n - 1) * background) / n, rtol=1e-5)


def test_plane_uncertainty_is_the_plane_mean_of_entropy():
    probs = np.moveaxis(np.random.default_rng(2).dirichlet(np.ones(3), size=SHAPE), -1, 0).astype(np.float32)
    h = entropy(probs)
    u = plane_uncertainty(probs)
    np.testing.assert_allclose(u["z"], h.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(u["y"], h.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(u["x"], h.mean(axis=(0, 1)), rtol=1e-6)


def test_plane_uncertainty_refuses_a_3d_array():
    with pytest.raises(ValueError):
        plane_uncertainty(np.full(SHAPE, 0.5))


# --- rank_planes ---------------------------------------------------------------------------


def test_rank_planes_most_uncertain_first():
    u = _uncertainty(z=[0.1, 0.9, 0.2, 0.3, 0.05, 0.7], y=[0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], x=[0.0] * 8)
    chosen = rank_planes(u, top=3, min_distance=1, border=0)
    assert chosen == [Suggestion("z", 1, 0.9), Suggestion("z", 5, 0.7), Suggestion("y", 0, 0.5)]
    values = [s.uncertainty for s in rank_planes(u, top=10, min_distance=1, border=0)]
    assert values == sorted(values, reverse=True)
    assert all(isinstance(s.index, int) and isinstance(s.uncertainty, float) for s in chosen)


def test_rank_planes_skips_annotated_planes():
    u = _uncertainty(z=[0.0, 0.9, 0.0, 0.8, 0.0, 0.0, 0.0, 0.1], y=[0.0] * 4, x=[0.85, 0.0, 0.0, 0.0])
    chosen = rank_planes(u, {"z": [1], "x": [0]}, top=2, min_distance=1, border=0)
    assert [(s.axis, s.index) for s in chosen] == [("z", 3), ("z", 7)]


def test_rank_planes_annotated_plane_of_another_axis_is_not_skipped():
    u = _uncertainty(z=[0.0, 0.9, 0.0], y=[0.0, 0.95, 0.0], x=[0.0, 0.0, 0.0])
    chosen = rank_planes(u, {"z": [1]}, top=1, min_distance=1, border=0)
    assert [(s.axis, s.index) for s in chosen] == [("y", 1)]


def test_rank_planes_keeps_min_distance_from_annotated_planes():
    z = np.zeros(20)
    z[[10, 11, 12, 13, 15]] = [1.0, 0.9, 0.8, 0.7, 0.6]
    u = _uncertainty(z=z)
    # min_distance 3: 11 and 12 are closer than 3 to the annotated plane 10; 13 is 3 away.
    chosen = rank_planes(u, {"z": [10]}, top=1, min_distance=3, border=0)
    assert [(s.axis, s.index) for s in chosen] == [("z", 13)]


def test_rank_planes_keeps_min_distance_between_suggestions():
    z = np.zeros(30)
    z[[5, 6, 7, 8, 20]] = [0.9, 0.85, 0.8, 0.75, 0.1]
    chosen = rank_planes(_uncertainty(z=z), top=3, min_distance=3, border=0)
    assert [s.index for s in chosen] == [5, 8, 20]
    for a in chosen:
        for b in chosen:
            assert a is b or abs(a.index - b.index) >= 3


def test_rank_planes_default_min_distance():
    """Default: 1/20 of the axis length, at least 2."""
    short = np.zeros(12)
    short[[4, 5, 6]] = [0.9, 0.8, 0.7]
    assert [s.index for s in rank_planes(_uncertainty(z=short), top=2, border=0)] == [4, 6]  # 2 apart: allowed
    long = np.zeros(100)
    long[[40, 44, 45, 50]] = [0.9, 0.8, 0.7, 0.6]
    assert [s.index for s in rank_planes(_uncertainty(z=long), top=2, border=0)] == [40, 45]  # 100 // 20 = 5


@pytest.mark.parametrize("top", [1, 2, 4])
def test_rank_planes_respects_top(top):
    u = _uncertainty(z=np.linspace(0, 1, 40), y=np.linspace(1, 0, 40), x=np.full(40, 0.5))
    chosen = rank_planes(u, top=top, border=0)
    assert len(chosen) == top
    assert chosen[0] in (Suggestion("z", 39, 1.0), Suggestion("y", 0, 1.0))


def test_rank_planes_returns_fewer_when_no_plane_is_left():
    u = _uncertainty(z=[0.5, 0.4, 0.3, 0.2])
    chosen = rank_planes(u, {"z": [0, 3]}, top=5, min_distance=1, border=0)
    assert [s.index for s in chosen] == [1, 2]
    assert rank_planes(u, {"z": [0, 1, 2, 3]}, top=5, border=0) == []


@pytest.mark.parametrize("top", [0, -1])
def test_rank_planes_refuses_top_below_one(top):
    with pytest.raises(ValueError, match="top"):
        rank_planes(_uncertainty(z=[0.5, 0.4]), top=top, border=0)


def test_rank_planes_with_a_nan_uncertainty():
    """A NaN plane (e.g. from a probabilities file holding NaN) must be refused, or at least not spoil the order."""
    u = _uncertainty(z=[0.1, np.nan, 0.5, 0.2, 0.3, 0.9])
    try:
        chosen = rank_planes(u, top=6, min_distance=1, border=0)
    except ValueError:
        return
    finite = [s.uncertainty for s in chosen if np.isfinite(s.uncertainty)]
    assert finite == sorted(finite, reverse=True)  # today: [0.1, 0.9, 0.5, 0.2, 0.3]


def test_rank_planes_refuses_missing_axis():
    with pytest.raises(ValueError):
        rank_planes({"z": np.zeros(5)}, top=1, border=0)


def test_rank_planes_skips_planes_near_the_volume_faces():
    values = np.linspace(0.1, 0.2, 40)
    values[[0, 39]] = 1.0  # the faces: most uncertain, as padding makes them
    values[3] = 0.9
    u = {"z": values, "y": np.zeros(40), "x": np.zeros(40)}
    assert [s.index for s in rank_planes(u, top=1)] == [34]  # default border 40 // 8 = 5
    assert [s.index for s in rank_planes(u, top=2, border=0, min_distance=1)] == [0, 39]
    assert [s.index for s in rank_planes(u, top=1, border=2)] == [3]
