"""Small inline SVG charts, drawn on the server (no script, no external assets)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

#: Rough width of one character of the charts' 10px labels, for fitting labels under bars.
_CHAR = 6.0
_LEFT = 36  # room for the scale's numbers


@dataclass(frozen=True)
class Bar:
    """One bar: ``label`` names it on hover; ``axis`` is the text under it (``label`` when
    None, nothing when empty)."""

    label: str
    value: float
    kind: str = "default"
    axis: str | None = None

    @property
    def under(self) -> str:
        return self.label if self.axis is None else self.axis


def nice_top(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten at or above ``value`` (1 for 0 or
    less): a scale's top that reads as a round number."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * power >= value:
            return step * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def bars(
    data: Sequence[Bar],
    *,
    width: int = 640,
    height: int = 160,
    title: str = "",
    values: bool = False,
    scale: bool = True,
) -> Markup:
    """A bar chart: a scale on the left (0, half and top, with grid lines) unless ``scale``
    is false, each bar's number above it when ``values``, and labels under the bars,
    turned and thinned when they would overlap. Hovering a bar shows its label and value."""
    if not data:
        return Markup('<p class="empty">No data yet.</p>')
    top = nice_top(max(b.value for b in data))
    left = _LEFT if scale else 0
    slot = (width - left) / len(data)
    gap = min(4.0, slot / 4)
    bar_w = max(2.0, slot - gap)
    longest = max(len(b.under) for b in data) * _CHAR
    # The room each label has: bars without one (a pair's second) lend theirs.
    spacing = (width - left) / max(1, sum(1 for b in data if b.under))
    turned = longest > spacing - 4
    # Turned labels need about a line's height of room each; past that, only every n-th.
    every = max(1, math.ceil(12 / spacing)) if turned else 1
    bottom = int(min(longest, 80) * 0.7) + 12 if turned else 20
    head = 14 if values else 6
    chart_h = height - 20 - head
    total = head + chart_h + bottom
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {total}" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    if scale:
        for tick in (0.0, top / 2, top):
            y = head + chart_h * (1 - tick / top)
            parts.append(
                f'<g class="scale"><line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#d0d5dd" stroke-width="0.5"/><text x="{left - 4}" y="{y + 3:.1f}" '
                f'text-anchor="end">{tick:g}</text></g>'
            )
    seen = 0  # labelled bars so far
    for i, b in enumerate(data):
        h = chart_h * (b.value / top)
        x = left + i * slot + gap / 2
        center = x + bar_w / 2
        parts.append(
            f'<g class="bar {escape(b.kind)}"><rect x="{x:.1f}" y="{head + chart_h - h:.1f}" '
            f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(b.label)}: '
            f"{b.value:g}</title></rect>"
        )
        if values:
            parts.append(
                f'<text class="value" x="{center:.1f}" y="{head + chart_h - h - 3:.1f}" '
                f'text-anchor="middle">{b.value:g}</text>'
            )
        if b.under and seen % every == 0:
            base = head + chart_h + 12
            if turned:
                parts.append(
                    f'<text class="axis" x="{center:.1f}" y="{base}" text-anchor="end" '
                    f'transform="rotate(-40 {center:.1f} {base})">{escape(b.under)}</text>'
                )
            else:
                parts.append(
                    f'<text class="axis" x="{center:.1f}" y="{base}" text-anchor="middle">'
                    f"{escape(b.under)}</text>"
                )
        seen += 1 if b.under else 0
        parts.append("</g>")
    parts.append("</svg>")
    # Every interpolated label went through escape() above; numbers are formatted floats.
    return Markup("".join(parts))  # noqa: S704


def compare(
    mine: Sequence[float], peers: Sequence[float], labels: Sequence[str], *, title: str
) -> Markup:
    """Two series as paired bars: a principal against their peer group's median. Each
    pair is labelled once, under its first bar."""
    data: list[Bar] = []
    for label, a, b in zip(labels, mine, peers, strict=True):
        data.append(Bar(f"{label} (them)", a, "mine", axis=label))
        data.append(Bar(f"{label} (peers)", b, "peers", axis=""))
    return bars(data, title=title, values=True)
