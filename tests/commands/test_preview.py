"""Tests for sparseseg.commands.preview.render_preview (synthetic data, no files)."""

import numpy as np
import pytest

from sparseseg.commands.preview import _PALETTE, _PLANE_COLOUR, render_preview

SHAPE = (20, 30, 40)
GREY = (128, 128, 128)  # a constant image is drawn mid-grey


def _truth():
    """Dense labels: background 0, a sphere of class 1 and a box of class 2."""
    z, y, x = np.indices(SHAPE)
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[(z - 10) ** 2 + (y - 15) ** 2 + (x - 12) ** 2 <= 36] = 1
    truth[2:9, 20:28, 28:37] = 2
    return truth


def _sparse(z_planes=(5, 10), y_planes=(15,)):
    """Labels that are 255 (unlabeled) except on a few annotated planes."""
    truth, labels = _truth(), np.full(SHAPE, 255, dtype=np.uint8)
    for k in z_planes:
        labels[k] = truth[k]
    for k in y_planes:
        labels[:, k] = truth[:, k]
    return labels


def _views(out):
    """Boxes (r0, r1, c0, c1) of the three views, found as the mid-grey blocks."""
    grey = np.all(out == GREY, axis=2)
    cols = np.flatnonzero(grey.sum(axis=0) >= 10)  # text has no long grey runs
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    assert len(runs) == 3, f"expected three views, found {len(runs)}"
    boxes = []
    for run in runs:
        rows = np.flatnonzero(grey[:, run].all(axis=1))
        boxes.append((rows[0], rows[-1] + 1, run[0], run[-1] + 1))
    return boxes


def _pixel(out, box, shape2d, i, j):
    """Colour of voxel (i, j) of a view with box ``box`` showing a ``shape2d`` slice."""
    r0, r1, c0, c1 = box
    return tuple(out[r0 + int((i + 0.5) * (r1 - r0) / shape2d[0]), c0 + int((j + 0.5) * (c1 - c0) / shape2d[1])])


def _blend(colour, alpha=0.45):
    return tuple(int(v) for v in np.round((1 - alpha) * 128 + alpha * np.asarray(colour)))


def test_output_is_rgb_uint8_and_grey_scaled_robustly():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    image[0, 0, 0] = 1e9  # one outlier must not wash out the rest
    out = render_preview(image)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    r0, r1, c0, c1 = _views(render_preview(np.ones(SHAPE)))[0]
    axial = out[r0:r1, c0:c1]
    assert np.all(axial == axial[..., :1])  # grey
    assert np.unique(axial).size > 100 and 100 < axial.mean() < 155  # a real ramp, mid-grey


def test_overlay_colour_at_labelled_voxels_and_grey_elsewhere():
    image, labels = np.ones(SHAPE), _sparse()
    boxes = _views(render_preview(image, centre=(10, 15, 12)))
    out = render_preview(image, labels, centre=(10, 15, 12))
    axial = boxes[0]
    assert _pixel(out, axial, SHAPE[1:], 15, 12) == _blend(_PALETTE[0])  # sphere centre
    assert _pixel(out, axial, SHAPE[1:], 2, 2) == GREY  # class 0: no overlay
    coronal = boxes[1]  # ZX at y=15: z=2..8 unlabeled except z=5
    assert _pixel(out, coronal, (SHAPE[0], SHAPE[2]), 3, 12) == GREY  # unlabeled: no overlay
    assert _pixel(out, coronal, (SHAPE[0], SHAPE[2]), 10, 12) == _blend(_PALETTE[0])
    box = render_preview(image, labels, centre=(5, 24, 30))
    assert _pixel(box, boxes[0], SHAPE[1:], 24, 30) == _blend(_PALETTE[1])  # class 2


def test_legend_strip_lists_classes_present():
    image = np.ones(SHAPE)
    bare = render_preview(image)
    one = render_preview(image, np.where(_sparse() == 2, 0, _sparse()))
    both = render_preview(image, _sparse(), class_names={1: "nucleus", 2: "mito"})
    assert bare.shape[0] < one.shape[0]
    swatches = lambda o, k: np.all(o == _PALETTE[k], axis=2).sum()  # noqa: E731
    assert swatches(one, 0) > 0 and swatches(one, 1) == 0
    assert swatches(both, 0) > 0 and swatches(both, 1) > 0


def test_legend_is_capped_for_many_classes():
    labels = np.arange(np.prod(SHAPE)).reshape(SHAPE) % 500
    out = render_preview(np.ones(SHAPE), labels, unlabeled=-1)
    assert max(out.shape[:2]) < 2000 and out.shape[0] < 2 * render_preview(np.ones(SHAPE)).shape[0]


def test_annotated_planes_are_drawn_as_lines():
    image = np.ones(SHAPE)
    plain = render_preview(image)
    out = render_preview(image, planes={"y": {15}, "x": []})
    assert not np.all(plain == _PLANE_COLOUR, axis=2).any()
    r0, r1, c0, c1 = _views(plain)[0]  # axial view: the y=15 plane is a horizontal line
    row = r0 + int(15.5 * (r1 - r0) / SHAPE[1])
    assert np.all(out[row, c0:c1] == _PLANE_COLOUR)
    assert not np.all(out[r0 + 2, c0:c1] == _PLANE_COLOUR, axis=1).any()


def test_title_marks_a_view_on_an_annotated_plane():
    image = np.ones(SHAPE)
    on = render_preview(image, planes={"z": [5]}, centre=(5, 15, 20))
    off = render_preview(image, planes={"z": [5]}, centre=(6, 15, 20))
    assert on.shape == off.shape
    changed = np.flatnonzero(np.any(on != off, axis=(1, 2)))
    boxes = _views(off)
    assert changed.size and changed.max() < boxes[0][0]  # only the title row differs

    def title_end(out):  # rightmost text pixel of the axial view's title
        return np.flatnonzero(out[: boxes[0][0], : boxes[1][2]].any(axis=(0, 2))).max()

    assert title_end(on) > title_end(off) + 30  # "z = 5 (annotated)" vs "z = 6"


def test_densely_annotated_axis_draws_no_lines():
    out = render_preview(np.ones(SHAPE), planes={"z": list(range(SHAPE[0]))})
    assert not np.all(out == _PLANE_COLOUR, axis=2).any()


def test_spacing_stretches_coronal_view_with_a_cap():
    image = np.ones(SHAPE)

    def aspect(**kw):
        r0, r1, c0, c1 = _views(render_preview(image, **kw))[1]
        return (r1 - r0) / (c1 - c0)

    iso = aspect()
    assert iso == pytest.approx(SHAPE[0] / SHAPE[2])
    assert aspect(spacing=(3.0, 1.0, 1.0)) == pytest.approx(3 * iso)
    assert aspect(spacing=(50, 4, 4)) == pytest.approx(4 * iso)  # 12.5x capped at 4x


def test_multichannel_shows_channel_0_and_nan_does_not_crash():
    image = np.ones((2,) + SHAPE)
    image[1, :, 10:20] = 1000.0
    out = render_preview(image)
    assert out.shape == render_preview(image[0]).shape
    assert np.array_equal(out, render_preview(image[0]))
    axial = _views(render_preview(image[0]))[0]
    nan = np.ones(SHAPE)
    nan[:, :5] = np.nan
    out = render_preview(nan)
    assert _pixel(out, axial, SHAPE[1:], 2, 20) == (0, 0, 0)  # NaN is black
    assert _pixel(out, axial, SHAPE[1:], 20, 20) == GREY
    assert render_preview(np.full(SHAPE, np.nan)).shape == out.shape


def test_large_slices_are_downscaled():
    out = render_preview(np.zeros((4, 1024, 1024), np.uint8), spacing=(50, 4, 4))
    assert max(out.shape[:2]) < 2000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": np.zeros((30, 40))},  # 2D image
        {"image": np.zeros((0, 30, 40))},  # empty
        {"image": np.zeros(SHAPE, dtype=complex)},
        {"labels": np.zeros((20, 30, 41), np.uint8)},  # shape mismatch
        {"labels": np.zeros(SHAPE, np.float32)},
        {"centre": (20, 0, 0)},  # out of range
        {"centre": (-1, 0, 0)},
        {"centre": (1, 2)},
        {"spacing": (1.0, -1.0, 1.0)},
        {"spacing": (1.0, 0.0, 1.0)},
        {"spacing": (1.0, 1.0)},
        {"spacing": (1.0, float("nan"), 1.0)},
        {"planes": {"z": [20]}},
        {"planes": {"t": [1]}},
        {"alpha": 1.5},
        {"unlabeled": "255"},
        {"class_names": ["a", "b"]},
    ],
)
def test_bad_input_raises_value_error(kwargs):
    kwargs = {"image": np.zeros(SHAPE), **kwargs}
    with pytest.raises(ValueError):
        render_preview(**kwargs)


def test_error_message_names_the_bad_value():
    with pytest.raises(ValueError, match="37"):
        render_preview(np.zeros(SHAPE), centre=(0, 37, 0))
    with pytest.raises(ValueError, match=r"\(20, 30, 41\)"):
        render_preview(np.zeros(SHAPE), np.zeros((20, 30, 41), np.uint8))
