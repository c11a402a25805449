"""A DAG drawn as SVG: layers left to right by longest path from the roots, each
layer ordered by where its upstream nodes sit, edges as curves."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 160, 46, 56, 16, 12
MAX_NODES = 400


@dataclass(frozen=True)
class Node:
    key: str
    label: str
    sub: str = ""
    status: str = ""
    href: str | None = None


def layers(keys: list[str], upstream: dict[str, list[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(k: str, seen: frozenset[str]) -> int:
        if k in depth:
            return depth[k]
        ups = [u for u in upstream.get(k, []) if u in upstream and u not in seen]
        depth[k] = 1 + max((visit(u, seen | {k}) for u in ups), default=-1)
        return depth[k]

    for k in keys:
        visit(k, frozenset())
    return depth


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def draw(nodes: list[Node], edges: list[tuple[str, str]], *, name: str = "DAG") -> Markup:
    """`edges` are (upstream, downstream) pairs of node keys."""
    nodes = nodes[:MAX_NODES]
    keys = [n.key for n in nodes]
    known = set(keys)
    edges = [(a, b) for a, b in edges if a in known and b in known]
    upstream: dict[str, list[str]] = {k: [] for k in keys}
    for a, b in edges:
        upstream[b].append(a)
    depth = layers(keys, upstream)
    columns: dict[int, list[str]] = {}
    for k in keys:
        columns.setdefault(depth[k], []).append(k)
    row: dict[str, float] = {}
    for d in sorted(columns):
        members = columns[d]
        if d:
            members.sort(key=lambda k: (
                sum(row[u] for u in upstream[k]) / len(upstream[k]) if upstream[k] else 0.0))
        for i, k in enumerate(members):
            row[k] = float(i)
    tallest = max((len(c) for c in columns.values()), default=1)
    width = PAD * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * GAP_X
    height = PAD * 2 + tallest * NODE_H + max(0, tallest - 1) * GAP_Y

    def pos(k: str) -> tuple[float, float]:
        column = columns[depth[k]]
        offset = (tallest - len(column)) * (NODE_H + GAP_Y) / 2
        return (PAD + depth[k] * (NODE_W + GAP_X), PAD + offset + row[k] * (NODE_H + GAP_Y))

    out = [
        f'<svg class="dag" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#9aa6b6"/></marker></defs>',
    ]
    for a, b in edges:
        (ax, ay), (bx, by) = pos(a), pos(b)
        x1, y1, x2, y2 = ax + NODE_W, ay + NODE_H / 2, bx, by + NODE_H / 2
        mid = (x2 - x1) / 2
        out.append(f'<path class="edge" marker-end="url(#arrow)" d="M {x1:.1f} {y1:.1f} '
                   f'C {x1 + mid:.1f} {y1:.1f} {x2 - mid:.1f} {y2:.1f} {x2 - 1:.1f} {y2:.1f}"/>')
    for n in nodes:
        x, y = pos(n.key)
        sub = " · ".join(p for p in (n.sub, n.status) if p)
        body = (
            f'<g class="node {escape(n.status)}" data-node="{escape(n.key)}" '
            f'transform="translate({x:.1f} {y:.1f})">'
            f'<title>{escape(n.label)}{" — " + escape(sub) if sub else ""}</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="10" y="19">{escape(_clip(n.label, 22))}</text>'
            f'<text class="sub" x="10" y="35">{escape(_clip(sub, 28))}</text></g>'
        )
        out.append(f'<a href="{escape(n.href)}">{body}</a>' if n.href else body)
    out.append("</svg>")
    return Markup("".join(out))
