"""Tests for sparseseg.commands.plot.line_chart (synthetic series, no files)."""

import numpy as np
import pytest

from sparseseg.commands.plot import _PALETTE, line_chart

NAN = float("nan")


def _has(img, colour):
    """Boolean (H, W) mask of the pixels that have exactly this RGB colour."""
    return np.all(img == np.asarray(colour, dtype=np.uint8), axis=2)


def _drawn(ys, xs=(1, 2, 4), **kw):
    """Pixels of series colour 0 that the points ys add to a chart of the same series
    with no points drawn (all NaN): the legend and axes cancel, the line and markers stay."""
    base = line_chart({"s": (list(xs), [NAN] * len(xs))}, **kw)
    return _has(line_chart({"s": (list(xs), list(ys))}, **kw), _PALETTE[0]) & ~_has(base, _PALETTE[0])


def _runs(idx):
    """Split sorted indices into runs of consecutive values."""
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)


def test_shape_dtype_white_background():
    out = line_chart({"a": ([1, 2, 4], [0.2, 0.5, 0.9])}, title="IoU", xlabel="planes", ylabel="IoU", size=(640, 400))
    assert out.shape == (400, 640, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert _has(out, (255, 255, 255)).mean() > 0.5


def test_series_colours_appear():
    one = line_chart({"a": ([1, 2], [0.3, 0.6])})
    assert _has(one, _PALETTE[0]).sum() > 20
    assert not _has(one, _PALETTE[1]).any()
    two = line_chart({"a": ([1, 2], [0.3, 0.6]), "b": ([1, 2], [0.5, 0.4])})
    assert _has(two, _PALETTE[0]).sum() > 20 and _has(two, _PALETTE[1]).sum() > 20
    legend_only = line_chart({"a": ([1, 2], [0.3, 0.6]), "b": ([1, 2], [NAN, NAN])})
    assert (_has(two, _PALETTE[1]) & ~_has(legend_only, _PALETTE[1])).sum() > 20  # b's line


def test_higher_value_is_drawn_higher():
    low, high = _drawn([0.2], xs=[1]), _drawn([0.8], xs=[1])
    assert low.any() and high.any()
    assert np.flatnonzero(high.any(axis=1)).mean() < np.flatnonzero(low.any(axis=1)).mean()


def test_increasing_series_rises_to_the_right():
    mask = _drawn([0.1, 0.9], xs=[1, 2])
    cols = np.flatnonzero(mask.any(axis=0))
    left_rows = np.flatnonzero(mask[:, cols[0]])
    right_rows = np.flatnonzero(mask[:, cols[-1]])
    assert right_rows.mean() < left_rows.mean() - 50


def test_nan_leaves_a_gap():
    full = _drawn([0.5, 0.5, 0.5])
    gap = _drawn([0.5, NAN, 0.5])
    assert len(_runs(np.flatnonzero(full.any(axis=0)))) == 1
    assert len(_runs(np.flatnonzero(gap.any(axis=0)))) == 2  # two lone markers
    assert gap.sum() < full.sum()


def test_deterministic_and_unsorted_x_is_sorted():
    rising = {"a": ([1, 2, 3], [0.2, 0.5, 0.8])}
    np.testing.assert_array_equal(line_chart(rising), line_chart(rising))
    np.testing.assert_array_equal(line_chart({"a": ([3, 1, 2], [0.8, 0.2, 0.5])}), line_chart(rising))
    assert not np.array_equal(line_chart({"a": ([1, 2, 3], [0.8, 0.5, 0.2])}), line_chart(rising))


def test_all_nan_and_ylim_none_do_not_crash():
    out = line_chart({"a": ([1, 2], [NAN, NAN]), "b": ([2], [0.7])}, ylim=None)
    assert out.shape == (480, 720, 3)
    flat = line_chart({"a": ([1, 2, 4], [0.7, 0.7, 0.7])}, ylim=None)  # equal min and max
    assert _has(flat, _PALETTE[0]).sum() > 20


def test_ylim_none_uses_the_data_range():
    # With ylim=(0, 1) the two points lie close together; fitted to the data they spread out.
    fixed = _drawn([0.50, 0.52], xs=[1, 2])
    fitted = _drawn([0.50, 0.52], xs=[1, 2], ylim=None)
    span = lambda m: np.ptp(np.flatnonzero(m.any(axis=1)))  # noqa: E731
    assert span(fitted) > 5 * span(fixed)


def test_distinct_colours_for_many_series():
    series = {f"s{k}": ([1, 2], [0.1 * k, 0.1 * k + 0.05]) for k in range(len(_PALETTE))}
    out = line_chart(series)
    for colour in _PALETTE:
        assert _has(out, colour).sum() > 10


@pytest.mark.parametrize(
    "series",
    [
        {},
        [([1, 2], [0.1, 0.2])],
        {"a": ([1, 2, 3], [0.1, 0.2])},
        {"a": ([], [])},
        {"a": (["1", "2"], [0.1, 0.2])},
        {"a": ([1, 2], ["x", 0.2])},
        {"a": ([1, None], [0.1, 0.2])},
        {"a": ([1, 2], [[0.1], [0.2]])},
        {"a": ([1, NAN], [0.1, 0.2])},
        {"a": [1, 2]},
    ],
)
def test_bad_series_raise(series):
    with pytest.raises(ValueError):
        line_chart(series)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": (720,)}, "size"),
        ({"size": (0, 480)}, "size"),
        ({"size": (720.0, 480)}, "size"),
        ({"size": (True, 480)}, "size"),
        ({"size": (100, 100)}, "size"),
        ({"ylim": (1.0, 0.0)}, "ylim"),
        ({"ylim": (0.5, 0.5)}, "ylim"),
        ({"ylim": (0.0, NAN)}, "ylim"),
        ({"ylim": (0.0, float("inf"))}, "ylim"),
        ({"ylim": (0.0,)}, "ylim"),
        ({"ylim": ("0", "1")}, "ylim"),
        ({"title": 3}, "title"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        line_chart({"a": ([1, 2], [0.1, 0.2])}, **kwargs)
