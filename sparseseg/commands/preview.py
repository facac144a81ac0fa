"""Preview picture of a volume: three orthogonal planes with a label overlay (numpy + Pillow)."""

from numbers import Integral, Real

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sparseseg.method.planning import AXES

# Okabe-Ito colours (colour-blind friendly) minus yellow/black; yellow marks annotated planes.
_PALETTE = np.array(
    [(230, 159, 0), (86, 180, 233), (0, 158, 115), (0, 114, 178), (213, 94, 0), (204, 121, 167)], dtype=np.float64
)
_PLANE_COLOUR = (255, 255, 0)
_MAX_STRETCH = 4.0  # no axis grows beyond this factor
_MAX_SIDE = 1800  # longest side of the three views together, in px
_MIN_SIDE = 480  # small volumes are zoomed up (integer factor) towards this
_PAD = 6
_MAX_LEGEND = 20  # classes listed in the legend


def _index(value, size, what):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{what} must be in [0, {size - 1}], got {value!r}")
    return int(value)


def _grey_range(vol):
    flat = vol.reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)].astype(np.float64)
    sample = sample[np.isfinite(sample)]  # NaN/inf must not spoil the percentiles
    return tuple(np.percentile(sample, [1, 99]).tolist()) if sample.size else (0.0, 0.0)


def _to_grey(sl, lo, hi):
    s = sl.astype(np.float64)
    if hi > lo:
        g = np.clip((s - lo) * (255.0 / (hi - lo)), 0, 255)
    else:  # (nearly) constant image: mid-grey, brighter/darker outliers white/black
        g = np.where(s > lo, 255.0, np.where(s == lo, 128.0, 0.0))
    return np.nan_to_num(g, nan=0.0)


def _overlay(grey, lab, unlabeled, alpha):
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if lab is not None:
        mask = (lab != unlabeled) & (lab > 0)
        if mask.any():
            colours = _PALETTE[(lab[mask].astype(np.int64) - 1) % len(_PALETTE)]
            rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * colours
    return Image.fromarray(np.round(rgb).astype(np.uint8))


def render_preview(
    image, labels=None, *, planes=None, centre=None, spacing=None, class_names=None, unlabeled=255, alpha=0.45
) -> np.ndarray:
    """Three orthogonal planes through a volume, with labels as a coloured overlay.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
        Numeric volume. For several channels only channel 0 is shown. Grey
        values are scaled between the 1st and 99th percentile; NaN is black.
    labels : ndarray of int, shape (Z, Y, X), optional
        Class per voxel; 0 (background) and `unlabeled` get no overlay, classes
        1, 2, ... get colours from a colour-blind-friendly palette (cycled).
    planes : dict, optional
        Annotated plane indices per axis, e.g. ``{"z": [12, 40], "y": [64]}``.
        They are drawn as yellow lines where they cut the other views (unless
        more than half the planes of an axis are annotated), and a view lying
        on an annotated plane is marked "(annotated)" in its title.
    centre : sequence of 3 int, optional
        (z, y, x) voxel the three views pass through; default the volume centre.
    spacing : sequence of 3 float, optional
        (z, y, x) voxel size. Views are stretched (nearest neighbour, at most
        4x per axis) so that pixels are physically square.
    class_names : dict, optional
        ``{class_id: name}`` for the legend (first 20 classes); default "class <id>".
    unlabeled : int, optional
        Label value meaning "not annotated" (default 255).
    alpha : float, optional
        Opacity of the label overlay, in [0, 1] (default 0.45).

    Returns
    -------
    preview : ndarray of uint8, shape (H, W, 3)
        RGB picture: axial (YX at z), coronal (ZX at y) and sagittal (ZY at x)
        views side by side with titles, legend below; longest side < ~2000 px.

    Raises
    ------
    ValueError
        If any argument has a wrong shape, type or value (named in the message).
    """
    vol, labels, centre, annotated, spacing = _checked(image, labels, planes, centre, spacing, class_names, unlabeled)
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    shape = vol.shape
    classes = [] if labels is None else [int(c) for c in np.unique(labels) if c != unlabeled and c > 0]
    lines = {a: v if 2 * len(v) <= n else set() for (a, v), n in zip(annotated.items(), shape)}
    scale = _scale(shape, spacing)
    tiles = _tiles(vol, labels, centre, lines, scale, (unlabeled, alpha))
    titles = [
        f"{AXES[axis]} = {centre[axis]}" + (" (annotated)" if centre[axis] in annotated[AXES[axis]] else "")
        for axis in range(3)
    ]
    items = _legend_items(classes, class_names, any(lines.values()))
    return _composed(tiles, titles, items)


def _checked(image, labels, planes, centre, spacing, class_names, unlabeled):
    """The checked arguments of `render_preview`: the volume shown (Z, Y, X), the labels, the centre, the annotated
    planes per axis (sets) and the spacing; a `ValueError` names a bad one."""
    image = np.asarray(image)
    if image.ndim not in (3, 4) or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (Z, Y, X) or (C, Z, Y, X) array, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
        raise ValueError(f"image must be real numeric, got dtype {image.dtype}")
    vol = image[0] if image.ndim == 4 else image
    shape = vol.shape
    if isinstance(unlabeled, bool) or not isinstance(unlabeled, Integral):
        raise ValueError(f"unlabeled must be an integer, got {unlabeled!r}")
    labels = None if labels is None else np.asarray(labels)
    if labels is not None and labels.shape != shape:
        raise ValueError(f"labels shape {labels.shape} does not match image shape {shape}")
    if labels is not None and not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if centre is None:
        centre = tuple(n // 2 for n in shape)
    elif np.ndim(centre) != 1 or len(centre) != 3:
        raise ValueError(f"centre must be (z, y, x), got {centre!r}")
    centre = tuple(_index(c, n, f"centre[{a!r}]") for c, n, a in zip(centre, shape, AXES))
    if class_names is not None and not isinstance(class_names, dict):
        raise ValueError(f"class_names must be a dict {{class_id: name}}, got {class_names!r}")
    return vol, labels, centre, _annotated(planes, shape), _spacing(spacing)


def _annotated(planes, shape) -> dict:
    annotated = {a: set() for a in AXES}
    if planes is None:
        return annotated
    if not isinstance(planes, dict) or set(planes) - set(AXES):
        raise ValueError(f"planes must be a dict with keys among 'z', 'y', 'x', got {planes!r}")
    for a, idx in planes.items():
        n = shape[AXES.index(a)]
        idx = list(idx) if isinstance(idx, (set, frozenset)) else np.ravel(idx).tolist()
        annotated[a] = {_index(i, n, f"plane {a}={i!r}") for i in idx}
    return annotated


def _spacing(spacing):
    if spacing is None:
        return (1.0, 1.0, 1.0)
    if (
        np.ndim(spacing) != 1
        or len(spacing) != 3
        or not all(isinstance(s, Real) and not isinstance(s, bool) and np.isfinite(s) and s > 0 for s in spacing)
    ):
        raise ValueError(f"spacing must be 3 positive finite numbers (z, y, x), got {spacing!r}")
    return spacing


def _scale(shape, spacing) -> np.ndarray:
    """Pixels per voxel along z, y, x: the anisotropy (capped), then one zoom so the picture has a sane size."""
    sp = np.asarray(spacing, dtype=np.float64)
    stretch = np.minimum(sp / sp.min(), _MAX_STRETCH)
    nat = np.asarray(shape) * stretch
    long_side = max(nat[2] * 2 + nat[1], nat[1], nat[0])
    zoom = (
        _MAX_SIDE / long_side
        if long_side > _MAX_SIDE
        else max(1, min(_MIN_SIDE // long_side, int(_MAX_STRETCH // stretch.max())))
    )
    return stretch * zoom


def _tiles(vol, labels, centre, lines, scale, overlay) -> list:
    """The three views through ``centre`` (YX at z, ZX at y, ZY at x), overlaid (``overlay``: unlabeled, alpha),
    scaled, with the annotated planes of the other axes drawn across."""
    size = [max(1, int(round(n * s))) for n, s in zip(vol.shape, scale)]
    lo, hi = _grey_range(vol)
    cuts = (np.s_[centre[0]], np.s_[:, centre[1]], np.s_[:, :, centre[2]])
    tiles = []
    for cut, (r, c) in zip(cuts, [(1, 2), (0, 2), (0, 1)]):
        tile = _overlay(_to_grey(vol[cut], lo, hi), None if labels is None else labels[cut], *overlay)
        tile = tile.resize((size[c], size[r]), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(tile)
        for ax, across in ((r, True), (c, False)):  # annotated planes of the other two axes
            for i in lines[AXES[ax]]:
                p = min(size[ax] - 1, int((i + 0.5) * scale[ax]))
                draw.line([(0, p), (size[c] - 1, p)] if across else [(p, 0), (p, size[r] - 1)], fill=_PLANE_COLOUR)
        tiles.append(tile)
    return tiles


def _legend_items(classes, class_names, planes_drawn: bool) -> list:
    """(colour or None, name) per legend entry: the first `_MAX_LEGEND` classes, how many more, the plane lines."""
    items = [
        (
            tuple(int(v) for v in _PALETTE[(k - 1) % len(_PALETTE)]),
            str(class_names.get(k, f"class {k}")) if class_names else f"class {k}",
        )
        for k in classes[:_MAX_LEGEND]
    ]
    if len(classes) > _MAX_LEGEND:
        items.append((None, f"... {len(classes) - _MAX_LEGEND} more classes"))
    if planes_drawn:
        items.append((_PLANE_COLOUR, "annotated plane"))
    return items


def _composed(tiles, titles, items) -> np.ndarray:
    """The tiles side by side under their titles, the legend below, wrapped into rows that fit the width."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda t: int(np.ceil(measure.textbbox((0, 0), t, font=font)[2]))  # noqa: E731
    line_h = int(np.ceil(measure.textbbox((0, 0), "Ag", font=font)[3])) + 4
    cols = [max(t.width, text_w(s)) for t, s in zip(tiles, titles)]
    width = sum(cols) + _PAD * (len(cols) + 1)
    rows, x = [[]], _PAD
    for colour, name in items:
        w = line_h + 4 + text_w(name) + 2 * _PAD
        if rows[-1] and x + w > width:
            rows.append([])
            x = _PAD
        rows[-1].append((x, colour, name))
        x += w
    views_h, top = max(t.height for t in tiles), _PAD + line_h
    height = top + views_h + _PAD + (line_h * len(rows) + _PAD if items else 0)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = _PAD
    for tile, title, w in zip(tiles, titles, cols):
        draw.text((x, _PAD), title, fill=(255, 255, 255), font=font)
        canvas.paste(tile, (x, top))
        x += w + _PAD
    y = top + views_h + _PAD
    for row in rows:
        for x, colour, name in row:
            if colour is not None:
                draw.rectangle([x, y + 1, x + line_h - 3, y + line_h - 3], fill=colour)
            draw.text((x + line_h + 2, y), name, fill=(255, 255, 255), font=font)
        y += line_h
    return np.asarray(canvas, dtype=np.uint8).copy()
