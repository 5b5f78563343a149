"""The hub's SVG charts: pure functions, numbers in, accessible SVG out."""

from __future__ import annotations

import re

from appliance.hub import charts


def _values(svg: str, series: str) -> list[float]:
    return [float(v) for v in re.findall(rf'data-series="{series}"[^>]*data-value="([^"]+)"', svg)]


def test_bars_carry_their_numbers_titles_and_escaped_words():
    svg = charts.bar_chart(
        ["Nov 2", "Nov 9"], ["Nov 2 – 8, 2026", "Nov 9 – 15, 2026"],
        [charts.Series("chest", "Chest <X-ray>", [4, 0]),
         charts.Series("retina", "Retina", [2, 1])],
        title="Results & weeks", number=str,
    )
    assert svg.startswith('<svg class="chart bars"') and 'role="img"' in svg
    assert "<title>Results &amp; weeks</title>" in svg and "Chest &lt;X-ray&gt;" in svg
    assert _values(svg, "chest") == [4, 0] and _values(svg, "retina") == [2, 1]
    heights = [float(h) for h in re.findall(r'class="bar chest"[^>]*height="([^"]+)"', svg)]
    assert heights == [charts.PLOT_H, 0]  # the tallest bar fills the plot
    assert "<title>Retina, Nov 9 – 15, 2026: 1</title>" in svg


def test_a_rate_chart_draws_its_band_and_skips_weeks_without_results():
    svg = charts.rate_chart(
        ["a", "b", "c"], ["A", "B", "C"],
        [charts.Series("chest", "positivity", [0.25, None, 0.5])],
        title="Positivity", percent=lambda v: f"{v:.0%}", band=(0.2, 0.3), band_name="validation",
    )
    assert _values(svg, "chest") == [0.25, 0.5]
    assert 'data-low="0.2" data-high="0.3"' in svg and "<title>validation</title>" in svg
    assert svg.count("<circle") == 2 and "<polyline" in svg


def test_a_distribution_is_drawn_against_its_reference_or_alone():
    kwargs = dict(title="Drift", site_name="Ndola", reference_name="validation",
                  bin_label=lambda i, n: f"{i}/{n}", percent=lambda v: f"{v:.0%}")
    svg = charts.distribution_chart([0.5, 0.25, 0.25, 0.0], [0.25] * 4, **kwargs)
    assert _values(svg, "site") == [0.5, 0.25, 0.25, 0.0]
    assert 'class="reference"' in svg and "<title>validation</title>" in svg
    alone = charts.distribution_chart([1.0, 0.0], None, **kwargs)
    assert 'class="reference"' not in alone
