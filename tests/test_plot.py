"""Tests for sparseseg.plot.line_chart (numpy + Pillow, no files)."""

import numpy as np
import pytest

from sparseseg.plot import _PALETTE, line_chart

WHITE = (255, 255, 255)


def _pixels_of(chart, colour):
    """(rows, cols) of the pixels that have exactly ``colour``."""
    return np.nonzero(np.all(chart == np.array(colour, np.uint8), axis=2))


def test_line_chart_shape_dtype_and_background():
    chart = line_chart({"a": ([1, 2, 4], [0.2, 0.5, 0.7])}, title="IoU", xlabel="planes", ylabel="IoU")
    assert chart.shape == (480, 720, 3) and chart.dtype == np.uint8
    assert tuple(chart[0, 0]) == WHITE and tuple(chart[-1, -1]) == WHITE
    chart = line_chart({"a": ([1, 2], [0.2, 0.5])}, size=(300, 200))
    assert chart.shape == (200, 300, 3)


def test_line_chart_draws_each_series_in_its_colour():
    series = {f"s{k}": ([1, 2, 3], [0.1 * k, 0.1 * k + 0.1, 0.1 * k + 0.2]) for k in range(3)}
    chart = line_chart(series)
    for k in range(3):
        assert _pixels_of(chart, _PALETTE[k])[0].size > 20, k
    assert _pixels_of(chart, _PALETTE[3])[0].size == 0


def test_line_chart_higher_values_are_drawn_higher():
    chart = line_chart({"rising": ([1, 2, 3, 4], [0.0, 0.3, 0.6, 1.0])}, size=(400, 300))
    rows, cols = _pixels_of(chart, _PALETTE[0])
    legend = cols < 400 * 0.6  # the legend swatch sits on the right
    rows, cols = rows[legend], cols[legend]
    left, right = rows[cols < np.median(cols)], rows[cols >= np.median(cols)]
    assert right.mean() < left.mean() - 50  # image rows grow downwards


def test_line_chart_nan_leaves_a_gap_and_unsorted_x_is_sorted():
    with_nan = line_chart({"a": ([1, 2, 3], [0.2, np.nan, 0.8])}, size=(400, 300))
    full = line_chart({"a": ([1, 2, 3], [0.2, 0.5, 0.8])}, size=(400, 300))
    assert _pixels_of(with_nan, _PALETTE[0])[0].size < _pixels_of(full, _PALETTE[0])[0].size
    shuffled = line_chart({"a": ([3, 1, 2], [0.8, 0.2, 0.5])}, size=(400, 300))
    np.testing.assert_array_equal(shuffled, full)


def test_line_chart_is_deterministic_and_depends_on_the_data():
    series = {"a": ([1, 2, 4], [0.2, 0.5, 0.7])}
    np.testing.assert_array_equal(line_chart(series), line_chart(series))
    assert not np.array_equal(line_chart(series), line_chart({"a": ([1, 2, 4], [0.7, 0.5, 0.2])}))


def test_line_chart_automatic_ylim_and_single_point():
    chart = line_chart({"a": ([1, 2], [5.0, 7.0])}, ylim=None)
    assert _pixels_of(chart, _PALETTE[0])[0].size > 0
    chart = line_chart({"a": ([2], [0.5])})  # one x value only
    assert chart.shape == (480, 720, 3)
    chart = line_chart({"a": ([1, 2], [np.nan, np.nan])}, ylim=None)  # nothing finite to draw
    assert chart.shape == (480, 720, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(series={}),
        dict(series=[([1], [1])]),
        dict(series={"a": [1, 2, 3]}),
        dict(series={"a": ([1, 2], [0.5])}),
        dict(series={"a": ([], [])}),
        dict(series={"a": ([1, np.nan], [0.1, 0.2])}),
        dict(series={"a": (["x", "y"], [0.1, 0.2])}),
        dict(series={"a": ([[1, 2]], [[0.1, 0.2]])}),
        dict(series={"a": ([1], [1])}, title=3),
        dict(series={"a": ([1], [1])}, size=(100, 100)),
        dict(series={"a": ([1], [1])}, size=(True, 300)),
        dict(series={"a": ([1], [1])}, ylim=(1.0, 0.0)),
        dict(series={"a": ([1], [1])}, ylim=(0.0, np.inf)),
    ],
    ids=["empty", "not-dict", "not-pair", "unequal-lengths", "no-points", "nan-x", "text-x", "2d-x", "title-not-str",
         "too-small", "bool-size", "ylim-reversed", "ylim-infinite"],
)
def test_line_chart_refuses_bad_input(kwargs):
    series = kwargs.pop("series")
    with pytest.raises(ValueError):
        line_chart(series, **kwargs)
