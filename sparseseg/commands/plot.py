"""Line chart as an RGB array (numpy + Pillow), e.g. IoU against annotated planes."""

import math
from numbers import Integral, Real

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Okabe-Ito colours (colour-blind friendly) minus yellow, which is faint on white.
_PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (0, 114, 178), (213, 94, 0), (204, 121, 167), (0, 0, 0)]
_WHITE, _TEXT, _FRAME, _GRID = (255, 255, 255), (0, 0, 0), (90, 90, 90), (225, 225, 225)
_MIN_SIZE, _PAD, _TICK, _R = (200, 150), 8, 4, 3  # px: smallest chart, margin, tick, marker radius


def _nice_step(span):
    """Round step (1, 2, 2.5 or 5 times a power of ten) giving about 5 intervals over span."""
    raw = span / 5.0
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _fmt(value, step):
    d = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-6 * step), None)
    return f"{value:.3g}" if d is None else f"{round(value, d) + 0.0:.{d}f}"


def line_chart(series, *, title="", xlabel="", ylabel="", ylim=(0.0, 1.0), size=(720, 480)) -> np.ndarray:
    """A line chart as an (H, W, 3) uint8 RGB array (white background), for `sparseseg sweep`'s plot of IoU against
    annotated planes.

    Parameters
    ----------
    series : dict
        ``{name: (xs, ys)}``, equal-length non-empty numeric sequences (xs finite),
        joined in order of x; a NaN y is skipped and leaves a gap. Each series
        gets an Okabe-Ito colour (cycled after 7) and a legend entry.
    title, xlabel, ylabel : str, optional
        Chart title and axis labels.
    ylim : (float, float) or None, optional
        y range (values outside are clipped); None: the data range, padded.
    size : (int, int), optional
        (width, height) in px, at least (200, 150).

    Returns
    -------
    chart : ndarray of uint8, shape (height, width, 3)
        x ticks at the distinct x values, 5-6 round y ticks, legend right of the plot.

    Raises
    ------
    ValueError
        If an argument has a wrong type, shape or value (named in the message).
    """
    data = _series(series)
    if not all(isinstance(t, str) for t in (title, xlabel, ylabel)):
        raise ValueError(f"title, xlabel, ylabel must be strings, got {(title, xlabel, ylabel)!r}")
    _check_size(size)
    lo, hi = _ylim(ylim, data)
    step = _nice_step(hi - lo)
    yticks = [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
    xticks = np.unique(np.concatenate([xs for _, xs, _ in data]))
    frame = _Frame(int(size[0]), int(size[1]))
    names = [frame.cut(n) for n, _, _ in data]
    ylabels = [_fmt(v, step) for v in yticks]
    frame.place(names, ylabels, (title, xlabel, ylabel), (xticks, lo, hi))
    canvas = Image.new("RGB", (frame.width, frame.height), _WHITE)
    canvas.paste(_plot_area(frame, data, xticks, yticks), (frame.x0, frame.y0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([frame.x0 - 1, frame.y0 - 1, frame.x1, frame.y1], outline=_FRAME)
    _axes(canvas, draw, frame, (xticks, yticks, ylabels), (title, xlabel, ylabel))
    _legend(draw, frame, names)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _series(series) -> list:
    """(name, xs, ys) per series, checked and sorted by x."""
    if not isinstance(series, dict) or not series:
        raise ValueError(f"series must be a non-empty dict {{name: (xs, ys)}}, got {series!r}")
    data = []
    for name, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"series {name!r} must be a pair (xs, ys), got {pair!r}")
        try:
            xs, ys = (np.asarray(v) for v in pair)
        except (ValueError, TypeError):
            raise ValueError(f"series {name!r} must hold numeric sequences, got {pair!r}") from None
        if xs.ndim != 1 or ys.ndim != 1 or xs.dtype.kind not in "iuf" or ys.dtype.kind not in "iuf":
            raise ValueError(f"series {name!r} must hold 1-D numeric sequences, got {pair!r}")
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(f"series {name!r}: xs, ys need one length > 0, got {len(xs)}, {len(ys)}")
        if not np.all(np.isfinite(xs)):
            raise ValueError(f"series {name!r} has non-finite x values: {xs.tolist()!r}")
        o = np.argsort(xs, kind="stable")
        data.append((str(name), xs[o].astype(np.float64), ys[o].astype(np.float64)))
    return data


def _check_size(size) -> None:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in size)
        or size[0] < _MIN_SIZE[0]
        or size[1] < _MIN_SIZE[1]
    ):
        raise ValueError(f"size must be (width, height) integers >= {_MIN_SIZE}, got {size!r}")


def _ylim(ylim, data) -> tuple[float, float]:
    """The y range: ``ylim`` checked, or (None) the data's range with a little padding."""
    if ylim is not None and (
        not isinstance(ylim, (tuple, list))
        or len(ylim) != 2
        or not all(isinstance(v, Real) and not isinstance(v, bool) for v in ylim)
        or not ylim[0] < ylim[1]
        or not math.isfinite(ylim[1] - ylim[0])
    ):
        raise ValueError(f"ylim must be None or finite (low, high), low < high, got {ylim!r}")
    if ylim is None:
        finite = np.concatenate([ys[np.isfinite(ys)] for _, _, ys in data])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) if hi > lo else max(0.1 * abs(lo), 0.5)
        ylim = (lo - pad, hi + pad)
    return float(ylim[0]), float(ylim[1])


class _Frame:
    """Where a chart's parts go: the font's measures, the plot area (x0, y0)-(x1, y1), the legend's width, and the
    data's coordinates in the plot area (`px`, `py`)."""

    swatch = 22

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.font = ImageFont.load_default()
        self._measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self.line_h = int(math.ceil(self._measure.textbbox((0, 0), "Ag", font=self.font)[3])) + 4

    def text_w(self, text: str) -> int:
        return int(math.ceil(self._measure.textbbox((0, 0), text, font=self.font)[2]))

    def cut(self, name: str) -> str:
        """A legend name cut to a third of the width."""
        third = self.width // 3
        return (
            name if self.text_w(name) <= third else name[: max(1, len(name) * third // self.text_w(name) - 3)] + "..."
        )

    def place(self, names, ylabels, texts, ranges) -> None:
        title, xlabel, ylabel = texts
        xticks, self.lo, self.hi = ranges
        xl, xh = float(xticks[0]), float(xticks[-1])
        xpad = 0.05 * (xh - xl) if xh > xl else 1.0
        self.xl, self.xh = xl - xpad, xh + xpad
        line_h = self.line_h
        self.legend_w = self.swatch + 6 + max(self.text_w(n) for n in names) + 2 * _PAD
        self.x0 = _PAD + (line_h if ylabel else 0) + max(self.text_w(t) for t in ylabels) + _TICK + 4
        self.y0 = _PAD + (line_h if title else line_h // 2)
        self.x1 = max(self.x0 + 20, self.width - self.legend_w - 2 * _PAD)
        self.y1 = max(self.y0 + 20, self.height - _PAD - (line_h if xlabel else 0) - line_h - _TICK - 2)
        self.pw, self.ph = self.x1 - self.x0, self.y1 - self.y0

    def px(self, x):
        m = _R + 2  # keeps markers off the frame
        return m + (x - self.xl) / (self.xh - self.xl) * (self.pw - 2 * m)

    def py(self, y):
        m = _R + 2
        return self.ph - 1 - m - (y - self.lo) / (self.hi - self.lo) * (self.ph - 1 - 2 * m)


def _plot_area(frame: _Frame, data, xticks, yticks) -> Image.Image:
    """The grid and the series, drawn apart so that lines are clipped to the plot area."""
    pw, ph, px, py = frame.pw, frame.ph, frame.px, frame.py
    area = Image.new("RGB", (pw, ph), _WHITE)
    draw = ImageDraw.Draw(area)
    for line in [[(px(x), 0), (px(x), ph)] for x in xticks] + [[(0, py(y)), (pw, py(y))] for y in yticks]:
        draw.line(line, fill=_GRID)
    for k, (_, xs, ys) in enumerate(data):
        colour, ok = _PALETTE[k % len(_PALETTE)], np.isfinite(ys)
        pts = np.clip(np.stack([px(xs), py(np.where(ok, ys, frame.lo))], axis=1), -1e4, 1e4)
        for i in range(len(xs) - 1):
            if ok[i] and ok[i + 1]:
                draw.line([tuple(pts[i]), tuple(pts[i + 1])], fill=colour, width=2)
        for u, v in pts[ok]:
            draw.ellipse([u - _R, v - _R, u + _R, v + _R], fill=colour)
    return area


def _axes(canvas, draw, frame: _Frame, ticks, texts) -> None:
    """The ticks and their labels (x labels that would overlap their left neighbour are left out), the title and the
    axis labels."""
    xticks, yticks, ylabels = ticks
    title, xlabel, ylabel = texts
    x0, y0, x1, y1, line_h, font, text_w = (
        frame.x0,
        frame.y0,
        frame.x1,
        frame.y1,
        frame.line_h,
        frame.font,
        frame.text_w,
    )
    for y, label in zip(yticks, ylabels):
        v = y0 + frame.py(y)
        draw.line([(x0 - 1 - _TICK, v), (x0 - 1, v)], fill=_FRAME)
        draw.text((x0 - _TICK - 3 - text_w(label), v - line_h // 2 + 1), label, fill=_TEXT, font=font)
    right = -math.inf
    for x in xticks:
        u, label = x0 + frame.px(x), f"{float(x):g}"
        draw.line([(u, y1), (u, y1 + _TICK)], fill=_FRAME)
        if u - text_w(label) / 2 >= right + 4:
            draw.text((u - text_w(label) / 2, y1 + _TICK + 2), label, fill=_TEXT, font=font)
            right = u + text_w(label) / 2
    draw.text(((x0 + x1 - text_w(xlabel)) / 2, y1 + _TICK + 2 + line_h), xlabel, fill=_TEXT, font=font)
    draw.text((max(_PAD, (x0 + x1 - text_w(title)) // 2), _PAD), title, fill=_TEXT, font=font)
    if ylabel:
        label = Image.new("RGB", (text_w(ylabel), line_h), _WHITE)
        ImageDraw.Draw(label).text((0, 1), ylabel, fill=_TEXT, font=font)
        canvas.paste(label.rotate(90, expand=True), (_PAD, max(0, (y0 + y1 - label.width) // 2)))


def _legend(draw, frame: _Frame, names) -> None:
    """The legend, right of the plot: a swatch and a name per series."""
    line_h, swatch = frame.line_h, frame.swatch
    lx, c = frame.x1 + _PAD, frame.x1 + 2 * _PAD + swatch / 2  # legend box left, swatch centre
    draw.rectangle([lx, frame.y0, lx + frame.legend_w - 1, frame.y0 + line_h * len(names) + _PAD], outline=_GRID)
    for k, name in enumerate(names):
        colour, v = _PALETTE[k % len(_PALETTE)], frame.y0 + _PAD // 2 + k * line_h + line_h // 2
        draw.line([(c - swatch / 2, v), (c + swatch / 2, v)], fill=colour, width=2)
        draw.ellipse([c - _R, v - _R, c + _R, v + _R], fill=colour)
        draw.text((c + swatch / 2 + 6, v - line_h // 2 + 1), name, fill=_TEXT, font=frame.font)
