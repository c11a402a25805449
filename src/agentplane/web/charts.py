"""Charts drawn on the server as SVG: no script, no chart library. Colours come from
the stylesheet (classes), sizes from attributes, so the pages' CSP needs no inline style."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


def spark(
    values: Sequence[Any],
    labels: Sequence[str],
    *,
    width: int = 240,
    height: int = 40,
    shown: Callable[[Any], str] = str,
    bad: bool = False,
    name: str = "",
) -> Markup:
    """A small bar per value (a day), each with its label and value as a tooltip."""
    n = max(1, len(values))
    top = max([_num(v) for v in values] + [0.0]) or 1.0
    step = width / n
    gap = min(2.0, step * 0.2)
    parts = [
        f'<svg class="chart spark" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(name)}" preserveAspectRatio="none">',
        f'<line class="axis" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>',
    ]
    for i, (value, label) in enumerate(zip(values, labels, strict=False)):
        h = max(_num(value) / top * (height - 2), 1.0 if _num(value) else 0.0)
        parts.append(
            f'<rect class="bar{" bad" if bad else ""}" x="{i * step + gap / 2:.2f}" '
            f'y="{height - h:.2f}" width="{max(step - gap, 0.5):.2f}" height="{h:.2f}">'
            f"<title>{escape(label)}: {escape(shown(value))}</title></rect>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(
    values: Sequence[Any],
    labels: Sequence[str],
    *,
    width: int = 760,
    height: int = 200,
    shown: Callable[[Any], str] = str,
    name: str = "",
) -> Markup:
    """A column chart with a baseline, the top value marked and every few labels."""
    left, bottom, top_pad = 56, 22, 8
    n = max(1, len(values))
    top = max([_num(v) for v in values] + [0.0]) or 1.0
    inner_w, inner_h = width - left - 4, height - bottom - top_pad
    step = inner_w / n
    gap = min(3.0, step * 0.2)
    every = max(1, round(n / 8))
    parts = [
        f'<svg class="chart columns" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(name)}">',
        f'<line class="axis" x1="{left}" y1="{top_pad}" x2="{width}" y2="{top_pad}"/>',
        f'<line class="axis" x1="{left}" y1="{top_pad + inner_h}" x2="{width}" '
        f'y2="{top_pad + inner_h}"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{escape(shown(top))}</text>',
        f'<text x="{left - 4}" y="{top_pad + inner_h}" text-anchor="end">0</text>',
    ]
    for i, (value, label) in enumerate(zip(values, labels, strict=False)):
        h = max(_num(value) / top * inner_h, 1.0 if _num(value) else 0.0)
        x = left + i * step
        parts.append(
            f'<rect class="bar" x="{x + gap / 2:.2f}" y="{top_pad + inner_h - h:.2f}" '
            f'width="{max(step - gap, 0.5):.2f}" height="{h:.2f}">'
            f"<title>{escape(label)}: {escape(shown(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.2f}" y="{height - 6}" text-anchor="middle">'
                f"{escape(label[5:] if len(label) == 10 else label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def meter(used: Any, limit: Any, *, width: int = 240, height: int = 12) -> Markup:
    """How much of a limit is used; red beyond it."""
    if not limit:
        return Markup("")
    share = _num(used) / _num(limit)
    w = min(share, 1.0) * width
    return Markup(
        f'<svg class="chart meter-chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{share * 100:.1f}% used">'
        f'<rect class="meter-bg" x="0" y="0" width="{width}" height="{height}" rx="3"/>'
        f'<rect class="meter{" over" if share > 1 else ""}" x="0" y="0" width="{w:.2f}" '
        f'height="{height}" rx="3"/></svg>'
    )


def span(start: float, length: float, *, kind: str = "llm", failed: bool = False,
         width: int = 400, height: int = 14, label: str = "") -> Markup:
    """One row of a waterfall: a bar from `start` to `start + length`, both fractions of
    the run's span."""
    x = max(0.0, min(start, 1.0)) * width
    w = max(min(length, 1.0 - min(start, 1.0)) * width, 1.5)
    cls = "span" + (" tool" if kind == "tool" else "") + (" failed" if failed else "")
    return Markup(
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(label)}"><rect class="track" x="0" y="0" width="{width}" '
        f'height="{height}"/><rect class="{cls}" x="{x:.2f}" y="2" width="{w:.2f}" '
        f'height="{height - 4}"><title>{escape(label)}</title></rect></svg>'
    )
