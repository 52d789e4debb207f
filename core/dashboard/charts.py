"""Charts as inline SVG, drawn on the server: no script, no library, nothing from a CDN.

Colours come from the stylesheet (classes ``s0`` ... ``s7``), so dark mode recolours them, and
every bar carries its numbers in ``data-*`` attributes and a ``<title>`` tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

SERIES_CLASSES = 8


@dataclass(frozen=True)
class Series:
    name: str
    values: list[int]
    css: str = ""  # a class of the stylesheet; default: s0, s1, ... by position


def axis_step(value: int, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten) that reaches ``value`` in at most
    ``ticks`` steps."""
    power = 1
    while True:
        for m in (1, 2, 5):
            if m * power * ticks >= value:
                return m * power
        power *= 10


def stacked_bars(
    labels: list[str],
    series: list[Series],
    *,
    unit: str,
    chart_id: str,
    width: int = 760,
    height: int = 240,
) -> Markup:
    """Bars per label (a day), each stacked from ``series`` in order; a y axis with 4 steps."""
    left, bottom, top = 44, 22, 8
    plot_w, plot_h = width - left - 4, height - bottom - top
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    step = axis_step(max(totals, default=0))
    ticks = max(1, -(-max(totals, default=0) // step))
    y_max = step * ticks
    slot = plot_w / max(1, len(labels))
    bar_w = max(1.0, slot * 0.72)
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}"'
        f' role="img" data-total="{sum(totals)}" data-unit="{escape(unit)}"'
        f' aria-label="{escape(unit)} per day, {sum(totals)} in all">'
    ]
    for tick in range(ticks + 1):
        value = step * tick
        y = top + plot_h - plot_h * tick / ticks
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>'
        )
    every = max(1, round(len(labels) / 8))
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        base = float(top + plot_h)
        for n, s in enumerate(series):
            value = s.values[i]
            if not value:
                continue
            h = plot_h * value / y_max
            base -= h
            parts.append(
                f'<rect class="{s.css or f"s{n % SERIES_CLASSES}"}" x="{x:.1f}" y="{base:.1f}"'
                f' width="{bar_w:.1f}" height="{h:.1f}" data-label="{escape(label)}"'
                f' data-series="{escape(s.name)}" data-value="{value}">'
                f"<title>{escape(label)} · {escape(s.name)}: {value} {escape(unit)}</title></rect>"
            )
        if (len(labels) - 1 - i) % every == 0:  # today always labelled
            parts.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - 6}"'
                f' text-anchor="middle">{escape(label[5:])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
