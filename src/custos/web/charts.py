"""Small inline SVG charts, drawn on the server (no script, no external assets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    kind: str = "default"


def bars(data: Sequence[Bar], *, width: int = 640, height: int = 160, title: str = "") -> Markup:
    """A bar chart with labels under the bars and values on hover (``<title>``)."""
    if not data:
        return Markup('<p class="empty">No data yet.</p>')
    top = max(b.value for b in data) or 1.0
    gap = 4
    bar_w = max(2.0, (width - gap * len(data)) / len(data))
    chart_h = height - 24
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, b in enumerate(data):
        h = chart_h * (b.value / top)
        x = i * (bar_w + gap)
        parts.append(
            f'<g class="bar {escape(b.kind)}"><rect x="{x:.1f}" y="{chart_h - h:.1f}" '
            f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(b.label)}: '
            f"{b.value:g}</title></rect>"
        )
        if len(data) <= 16:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                f"{escape(b.label)}</text>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    # Every interpolated label went through escape() above; numbers are formatted floats.
    return Markup("".join(parts))  # noqa: S704


def compare(
    mine: Sequence[float], peers: Sequence[float], labels: Sequence[str], *, title: str
) -> Markup:
    """Two series as paired bars: a principal against their peer group's median."""
    data: list[Bar] = []
    for label, a, b in zip(labels, mine, peers, strict=True):
        data.append(Bar(f"{label} (them)", a, "mine"))
        data.append(Bar(f"{label} (peers)", b, "peers"))
    return bars(data, title=title)
