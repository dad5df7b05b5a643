"""Server-rendered SVG charts: they draw offline, in the dashboard and in the daily HTML file.

Every label is escaped; numbers are formatted here, never taken as markup from a report.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from tlswatch.render.html import visible

PALETTE = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#1f77b4", "#2ca02c", "#aec7e8", "#ffbb78"]



def escape(text: str) -> str:
    """A label for SVG: markup escaped, control characters shown as ``\\xNN``."""
    return html.escape(visible(text))


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 28,
              low: float = 0.9, high: float = 1.0) -> str:
    """A small line of rates (0..1) for the overview; gaps where a day has no data."""
    points = _points(values, width, height, low, high)
    paths = " ".join(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" '
                     f'points="{seg}"/>' for seg in points)
    return (f'<svg class="sparkline" role="img" aria-label="success rate" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{paths}</svg>')


def _points(values: Sequence[float | None], width: int, height: int, low: float,
            high: float) -> list[str]:
    segments: list[list[str]] = [[]]
    n = max(1, len(values) - 1)
    for i, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        clipped = min(high, max(low, value))
        x = i * width / n
        y = height - 2 - (clipped - low) / (high - low or 1) * (height - 4)
        segments[-1].append(f"{x:.1f},{y:.1f}")
    return [" ".join(seg) if len(seg) > 1 else f"{seg[0]} {seg[0]}" for seg in segments if seg]


def rate_chart(days: Sequence[str], rates: Sequence[float | None], *, title: str,
               width: int = 720, height: int = 220) -> str:
    """Daily success rate, with its axis scaled to the data (never above 100%)."""
    present = [r for r in rates if r is not None]
    low = min([*present, 0.99]) if present else 0.9
    low = max(0.0, (int(low * 100) - 1) / 100)
    left, bottom = 48, 24
    inner_w, inner_h = width - left - 8, height - bottom - 8
    lines = []
    for frac in (0, 0.5, 1):
        value = low + (1 - low) * frac
        y = 8 + inner_h - frac * inner_h
        lines.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 4}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{value * 100:.1f}%</text>')
    segs = _points(rates, inner_w, inner_h, low, 1.0)
    body = "".join(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" '
                   f'transform="translate({left},8)" points="{seg}"/>' for seg in segs)
    labels = _day_labels(days, left, inner_w, height)
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
            f'{"".join(lines)}{body}{labels}</svg>')


def stacked_bars(days: Sequence[str], series: Mapping[str, Sequence[int]], *, title: str,
                 width: int = 720, height: int = 220) -> str:
    """Failed sessions per day, stacked by result type, with a legend."""
    left, bottom, legend_h = 48, 24, 18 * ((len(series) + 2) // 3)
    inner_w, inner_h = width - left - 8, height - bottom - 8 - legend_h
    totals = [sum(s[i] for s in series.values()) for i in range(len(days))]
    peak = max([*totals, 1])
    bar_w = inner_w / max(1, len(days))
    parts = [f'<text x="{left - 4}" y="{8 + legend_h + 4}" font-size="11" text-anchor="end">'
             f'{peak:,}</text><text x="{left - 4}" y="{8 + legend_h + inner_h + 4}" '
             f'font-size="11" text-anchor="end">0</text>']
    for i in range(len(days)):
        y: float = 8 + legend_h + inner_h
        for k, (name, values) in enumerate(series.items()):
            h = values[i] / peak * inner_h
            if h <= 0:
                continue
            y -= h
            parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{y:.1f}" '
                         f'width="{max(1.0, bar_w - 2):.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(days[i])} '
                         f'{escape(name)}: {values[i]:,}</title></rect>')
    for k, name in enumerate(series):
        x, y = left + (k % 3) * (inner_w / 3), 14 + (k // 3) * 18
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" '
                     f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{x + 14:.1f}" y="{y}" '
                     f'font-size="11">{escape(name)}</text>')
    parts.append(_day_labels(days, left, inner_w, height))
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
            f'{"".join(parts)}</svg>')


def hbars(rows: Sequence[tuple[str, int]], *, title: str, width: int = 520) -> str:
    """Horizontal bars, e.g. failed sessions by result type in the daily file."""
    peak = max([v for _, v in rows] + [1])
    height = 22 * len(rows) + 8
    parts = []
    for i, (label, value) in enumerate(rows):
        w = value / peak * (width - 260)
        parts.append(f'<text x="0" y="{i * 22 + 18}" font-size="12">{escape(label)}</text>'
                     f'<rect x="200" y="{i * 22 + 6}" width="{w:.1f}" height="14" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{204 + w:.1f}" '
                     f'y="{i * 22 + 18}" font-size="12">{value:,}</text>')
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
            f'{"".join(parts)}</svg>')


def _day_labels(days: Sequence[str], left: int, inner_w: float, height: int) -> str:
    if not days:
        return ""
    step = max(1, len(days) // 6)
    n = max(1, len(days) - 1)
    return "".join(f'<text x="{left + i * inner_w / n:.1f}" y="{height - 6}" font-size="10" '
                   f'text-anchor="middle">{escape(days[i][5:])}</text>'
                   for i in range(0, len(days), step))
