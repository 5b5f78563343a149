"""The calibration page's charts, drawn on the box as SVG text (no CDN, no JavaScript).

Pure functions: numbers in, an ``<svg>`` string out. Words come in already translated
and are escaped here; colours and fonts come from the page's stylesheet (classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

SIZE = 240  # the plot's side in SVG units; the page scales it to fit
PAD = 34


def _x(value: float) -> float:
    return round(PAD + value * (SIZE - PAD - 6), 1)


def _y(value: float) -> float:
    return round(SIZE - PAD - value * (SIZE - PAD - 6), 1)


def _frame(x_label: str, y_label: str, title: str) -> list[str]:
    parts = [
        f"<title>{escape(title)}</title>",
        f'<rect class="plot" x="{PAD}" y="6" width="{SIZE - PAD - 6}" height="{SIZE - PAD - 6}"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text class="tick" x="{_x(tick)}" y="{SIZE - PAD + 14}" text-anchor="middle">'
            f"{tick:g}</text>"
        )
        parts.append(
            f'<text class="tick" x="{PAD - 4}" y="{_y(tick) + 4}" text-anchor="end">{tick:g}</text>'
        )
    parts.append(
        f'<text class="axis" x="{_x(0.5)}" y="{SIZE - 4}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text class="axis" transform="translate(10 {_y(0.5)}) rotate(-90)"'
        f' text-anchor="middle">{escape(y_label)}</text>'
    )
    return parts


def _svg(parts: list[str], label: str) -> str:
    body = "".join(parts)
    return (
        f'<svg class="chart" viewBox="0 0 {SIZE} {SIZE}" role="img"'
        f' aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def roc_chart(
    points: Sequence[tuple[float, float]],
    marks: Sequence[tuple[str, float, float, str]],
    *,
    x_label: str,
    y_label: str,
    title: str,
) -> str:
    """The ROC curve; ``marks`` are (css class, 1 - specificity, sensitivity, label)."""
    parts = _frame(x_label, y_label, title)
    parts.append(f'<line class="chance" x1="{_x(0)}" y1="{_y(0)}" x2="{_x(1)}" y2="{_y(1)}"/>')
    line = " ".join(f"{_x(fpr)},{_y(tpr)}" for fpr, tpr in points)
    parts.append(f'<polyline class="roc" points="{line}"/>')
    for css, fpr, tpr, label in marks:
        parts.append(
            f'<circle class="mark {escape(css)}" cx="{_x(fpr)}" cy="{_y(tpr)}" r="5">'
            f"<title>{escape(label)}</title></circle>"
        )
    return _svg(parts, title)


def histogram_chart(
    positive: Sequence[int],
    negative: Sequence[int],
    lines: Sequence[tuple[str, float, str]],
    *,
    x_label: str,
    y_label: str,
    title: str,
) -> str:
    """Scores of confirmed positives and negatives, bin by bin (each group scaled to its
    own total, so a rare group stays visible); ``lines`` are (css class, threshold,
    label)."""
    parts = _frame(x_label, y_label, title)
    bins = max(len(positive), len(negative), 1)
    width = (SIZE - PAD - 6) / bins
    totals = (max(1, sum(positive)), max(1, sum(negative)))
    tallest = max([c / totals[0] for c in positive] + [c / totals[1] for c in negative] + [1e-9])
    for group, counts, total, offset in (
        ("negative", negative, totals[1], 0.0),
        ("positive", positive, totals[0], 0.5),
    ):
        for index, count in enumerate(counts):
            if not count:
                continue
            height = (count / total) / tallest * (SIZE - PAD - 6)
            x = PAD + index * width + offset * width
            parts.append(
                f'<rect class="bar {group}" x="{x:.1f}" y="{SIZE - PAD - height:.1f}"'
                f' width="{width / 2:.1f}" height="{height:.1f}"><title>{count}</title></rect>'
            )
    for css, threshold, label in lines:
        parts.append(
            f'<line class="threshold {escape(css)}" x1="{_x(threshold)}" y1="6"'
            f' x2="{_x(threshold)}" y2="{SIZE - PAD}"><title>{escape(label)}</title></line>'
        )
    return _svg(parts, title)
