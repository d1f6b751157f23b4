"""The membership statechart as SVG geometry, read from the machine definition.

The dashboard must work offline, so the chart is drawn on the server: states
and transitions come from `MembershipMachine` itself (a new state or
transition shows up without touching this file); only the placement of the
known states is chosen here, for a readable picture. Transitions that keep
the state (interviews, reminders, label expiries) are left out of the
drawing: they are many, and change nothing a reader looks for here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workflows.membership import MembershipMachine

NODE_W, NODE_H = 160, 44
COLUMN, ROW = 232, 170
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 100, 110, 50  # the top leaves room for the long arc
# Column and row of each known state; a state not listed goes to a row of its own.
PLACES: dict[str, tuple[float, int]] = {
    "unknown": (0, 0),
    "applied": (1, 0),
    "admitted": (2, 0),
    "in_breach": (3, 0),
    "excluded": (4, 0),
    "rejected": (1, 1),
    "withdrawn": (2.5, 1),
}
PAIR_BEND = 40  # two opposite transitions between the same states curve apart
LONG_BEND = 120  # a transition across other states arcs over them


@dataclass(frozen=True)
class Node:
    id: str
    x: float
    y: float
    initial: bool

    @property
    def left(self) -> float:
        return self.x - NODE_W / 2

    @property
    def top(self) -> float:
        return self.y - NODE_H / 2


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    events: tuple[str, ...]
    path: str
    label_x: float
    label_y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    node_width: int = NODE_W
    node_height: int = NODE_H


def transitions() -> dict[tuple[str, str], tuple[str, ...]]:
    """(source, target) -> events, for every transition that changes the state."""
    found: dict[tuple[str, str], list[str]] = {}
    for state in MembershipMachine.states:
        for t in state.transitions:
            if t.source.id != t.target.id:
                events = found.setdefault((t.source.id, t.target.id), [])
                events += [str(e) for e in t.events if str(e) not in events]
    return {pair: tuple(events) for pair, events in found.items()}


def chart() -> Chart:
    nodes = _nodes()
    by_id = {n.id: n for n in nodes}
    moves = transitions()
    edges = tuple(
        _edge(by_id[s], by_id[t], events, reverse=(t, s) in moves)
        for (s, t), events in sorted(moves.items())
    )
    width = int(max(n.x for n in nodes) + MARGIN_X)
    height = int(max(n.y for n in nodes) + MARGIN_BOTTOM)
    return Chart(width, height, nodes, edges)


def _nodes() -> tuple[Node, ...]:
    nodes = []
    extra = 0
    last_row = max(row for _, row in PLACES.values())
    for state in MembershipMachine.states:
        if state.id in PLACES:
            column, row = PLACES[state.id]
        else:
            column, row = extra, last_row + 1
            extra += 1
        nodes.append(
            Node(state.id, MARGIN_X + column * COLUMN, MARGIN_TOP + row * ROW, bool(state.initial))
        )
    return tuple(nodes)


def _edge(a: Node, b: Node, events: tuple[str, ...], *, reverse: bool) -> Edge:
    dx, dy = b.x - a.x, b.y - a.y
    length = math.hypot(dx, dy)
    nx, ny = -dy / length, dx / length  # the left-hand normal of the direction a -> b
    crosses = abs(dy) < 1 and abs(dx) > 1.5 * COLUMN
    bend = LONG_BEND if crosses else PAIR_BEND if reverse else 0
    cx, cy = (a.x + b.x) / 2 + nx * bend, (a.y + b.y) / 2 + ny * bend
    sx, sy = _border(a, cx, cy)
    ex, ey = _border(b, cx, cy)
    # The label sits on the curve's midpoint, nudged off the line to the same side.
    mx, my = 0.25 * sx + 0.5 * cx + 0.25 * ex, 0.25 * sy + 0.5 * cy + 0.25 * ey
    side = 1 if bend else -1
    return Edge(
        a.id,
        b.id,
        events,
        f"M {sx:.1f} {sy:.1f} Q {cx:.1f} {cy:.1f} {ex:.1f} {ey:.1f}",
        round(mx + nx * 12 * side, 1),
        round(my + ny * 12 * side + 4, 1),
    )


def _border(node: Node, towards_x: float, towards_y: float) -> tuple[float, float]:
    """Where the ray from the node's centre towards a point leaves its rectangle."""
    dx, dy = towards_x - node.x, towards_y - node.y
    if dx == 0 and dy == 0:
        return node.x, node.y
    scale = min(
        (NODE_W / 2) / abs(dx) if dx else math.inf,
        (NODE_H / 2) / abs(dy) if dy else math.inf,
    )
    return node.x + dx * scale, node.y + dy * scale
