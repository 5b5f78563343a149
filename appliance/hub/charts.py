"""The programme pages' charts, drawn on the hub as SVG text: no JavaScript, nothing
from the internet, readable without the picture.

Pure functions: numbers in, an ``<svg>`` string out. Words and numbers arrive already
written in the reader's language (``readable.py``, ``formats.percent``) and are escaped
here. Each chart has a ``<title>`` (what it shows, read by a screen reader), and each
bar or point its own ``<title>`` with its label and number (a hover, and what the
browser test recounts) and a ``data-value`` holding the raw number. Colours come from
the stylesheet (classes ``chest``, ``retina``, ``refusal``, ``band``, ``reference``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 24, 40
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Series:
    """One programme's (or the reference's) numbers along the chart's labels: counts
    for bars, shares (0..1, None where there is nothing to divide) for lines."""

    css: str
    name: str
    values: Sequence[float | None]


def _y(share: float) -> float:
    return round(TOP + PLOT_H * (1 - share), 1)


def _svg(parts: list[str], title: str, css: str) -> Markup:
    return Markup(
        f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
    )


def _axis(labels: Sequence[str], top_label: str, every: int) -> list[str]:
    """The frame, the top and zero of the scale, and every ``every``-th label below."""
    slot = PLOT_W / max(len(labels), 1)
    parts = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - RIGHT}"'
        f' y2="{TOP + PLOT_H}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(top_label)}</text>",
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + PLOT_H + 4}" text-anchor="end">0</text>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>',
    ]
    for index, label in enumerate(labels):
        if index % every == 0 or index == len(labels) - 1:
            x = round(LEFT + slot * (index + 0.5), 1)
            parts.append(
                f'<text class="tick" x="{x}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    return parts


def _legend(series: Sequence[Series], extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    parts, x = [], LEFT
    for css, name in [(s.css, s.name) for s in series] + list(extra):
        parts.append(f'<rect class="key {escape(css)}" x="{x}" y="6" width="12" height="12"/>')
        parts.append(f'<text class="legend" x="{x + 16}" y="16">{escape(name)}</text>')
        x += 28 + 7 * len(name)
    return parts


def _every(labels: Sequence[str]) -> int:
    return max(1, -(-len(labels) // 6))  # at most ~6 axis labels: they must stay legible


def bar_chart(
    labels: Sequence[str],
    titles: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    number: Callable[[float], str],
) -> Markup:
    """Counts per label (a week, a site), one bar per series side by side. ``titles``
    are the labels in full (a week's date range) for each bar's own title."""
    tallest = max([v or 0 for s in series for v in s.values] + [1])
    slot = PLOT_W / max(len(labels), 1)
    width = slot * 0.8 / max(len(series), 1)
    parts = _legend(series) + _axis(labels, number(tallest), _every(labels))
    for index, full in enumerate(titles):
        for place, one in enumerate(series):
            value = one.values[index] or 0
            height = round(PLOT_H * value / tallest, 1)
            x = round(LEFT + slot * index + slot * 0.1 + width * place, 1)
            parts.append(
                f'<rect class="bar {escape(one.css)}" x="{x}" y="{TOP + PLOT_H - height}"'
                f' width="{round(width, 1)}" height="{height}" data-series="{escape(one.css)}"'
                f' data-label="{escape(full)}" data-value="{value:g}"><title>{escape(one.name)},'
                f" {escape(full)}: {escape(number(value))}</title></rect>"
            )
    return _svg(parts, title, "bars")


def rate_chart(
    labels: Sequence[str],
    titles: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    percent: Callable[[float | None], str],
    band: tuple[float, float] | None = None,
    band_name: str = "",
) -> Markup:
    """Shares per label (positivity, refusal) as lines with a point per label, over
    ``band``: the reference range (the model's validation positivity), shaded."""
    values = [v for s in series for v in s.values if v is not None]
    top = max(values + [band[1] if band else 0, 0.05])
    top = min(1.0, -(-top * 10 // 1) / 10)  # the next tenth up: 0.3 for 27 %
    slot = PLOT_W / max(len(labels), 1)
    extra = [("band", band_name)] if band else []
    parts = _legend(series, extra) + _axis(labels, percent(top), _every(labels))

    def y(share: float) -> float:
        return _y(share / top)

    if band:
        low, high = y(band[0]), y(band[1])
        parts.append(
            f'<rect class="band" x="{LEFT}" y="{high}" width="{PLOT_W}"'
            f' height="{max(round(low - high, 1), 2)}" data-low="{band[0]:g}"'
            f' data-high="{band[1]:g}"><title>{escape(band_name)}</title></rect>'
        )
    for one in series:
        points = []
        for index, value in enumerate(one.values):
            if value is None:
                continue
            x = round(LEFT + slot * (index + 0.5), 1)
            points.append((x, y(value), index, value))
        if len(points) > 1:
            line = " ".join(f"{x},{py}" for x, py, _, _ in points)
            parts.append(f'<polyline class="line {escape(one.css)}" points="{line}"/>')
        for x, py, index, value in points:
            parts.append(
                f'<circle class="point {escape(one.css)}" cx="{x}" cy="{py}" r="4"'
                f' data-series="{escape(one.css)}" data-label="{escape(titles[index])}"'
                f' data-value="{value:.6f}"><title>{escape(one.name)}, {escape(titles[index])}:'
                f" {escape(percent(value))}</title></circle>"
            )
    return _svg(parts, title, "rates")


def distribution_chart(
    site: Sequence[float],
    reference: Sequence[float] | None,
    *,
    title: str,
    site_name: str,
    reference_name: str,
    bin_label: Callable[[int, int], str],
    percent: Callable[[float | None], str],
) -> Markup:
    """A site's scores, as shares of its results per bin, as bars; the model's
    validation shares over the same bins as a step line (drift is the gap)."""
    bins = len(site)
    tallest = max(list(site) + list(reference or []) + [0.01])
    slot = PLOT_W / max(bins, 1)
    labels = [bin_label(i, bins) for i in range(bins)]
    key = [Series("site", site_name, site)]
    extra = [("reference", reference_name)] if reference is not None else []
    parts = _legend(key, extra) + _axis(labels, percent(tallest), max(1, bins // 4))
    for index, share in enumerate(site):
        height = round(PLOT_H * share / tallest, 1)
        parts.append(
            f'<rect class="bar site" x="{round(LEFT + slot * index + 1, 1)}"'
            f' y="{TOP + PLOT_H - height}" width="{round(slot - 2, 1)}" height="{height}"'
            f' data-series="site" data-label="{escape(labels[index])}" data-value="{share:.6f}">'
            f"<title>{escape(site_name)}, {escape(labels[index])}: {escape(percent(share))}"
            "</title></rect>"
        )
    if reference is not None:
        steps = []
        for index, share in enumerate(reference):
            steps += [
                f"{round(LEFT + slot * index, 1)},{_y(share / tallest)}",
                f"{round(LEFT + slot * (index + 1), 1)},{_y(share / tallest)}",
            ]
        parts.append(
            f'<polyline class="reference" points="{" ".join(steps)}">'
            f"<title>{escape(reference_name)}</title></polyline>"
        )
    return _svg(parts, title, "distribution")
