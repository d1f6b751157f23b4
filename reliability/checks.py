"""Bounds and rules with a verdict: what the fault phases (pause, readonly, adversarial,
clock, parked, soak) report instead of a comparison with a reference.

Each check names what it bounds, the figure measured, the bound, and says in one
line what it saw; a phase passes when all its checks do. The one-line summary
of a phase is what the report shows before and after a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["at_most", "fmt", "verdict"]


def fmt(value: Any) -> str:
    """Figures for people: thousands separators, one decimal for seconds."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def at_most(
    name: str, value: float | None, bound: float, said: str, shown: str | None = None
) -> dict[str, Any]:
    """`value` must not exceed `bound`; None (never measured, e.g. never happened) fails.
    `shown` is the bound as the report prints it (default: the number)."""
    passed = value is not None and value <= bound
    limit = f"≤ {shown or fmt(bound)}"
    return {"check": name, "value": value, "bound": limit, "passed": passed, "said": said}


def verdict(
    phase: str, checks: Sequence[dict[str, Any]], figures: dict[str, Any]
) -> dict[str, Any]:
    """The phase's result: its checks, its figures, and a one-line summary that leads with
    what failed."""
    failed = [c for c in checks if not c["passed"]]
    shown = failed or list(checks)
    summary = "; ".join(f"{c['said']} (bound {c['bound']})" for c in shown)
    return {
        "checks": list(checks),
        "figures": figures,
        "passed": not failed,
        "summary": f"{phase}: {summary}: {'PASS' if not failed else 'FAIL'}",
    }
