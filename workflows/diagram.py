"""The statechart as Mermaid, rendered from the machine itself.

`python -m workflows.diagram` rewrites docs/statechart.md; a test fails when
the committed diagram and the code disagree.
"""

from __future__ import annotations

import sys

from statemachine.contrib.diagram import formatter

from workflows.membership import MembershipMachine

HEADER = """# The membership statechart

Generated from `workflows/membership.py` by `python -m workflows.diagram`;
a test checks that it is current. `unknown` is the state before a cluster's
first submission (it is rendered as `from: null` in `membership.changed`).
Self-transitions change no state but run actions (award a label, send a
reminder, expire a label).

"""


def mermaid() -> str:
    return str(formatter.render(MembershipMachine, "mermaid")).strip() + "\n"


def document() -> str:
    return f"{HEADER}```mermaid\n{mermaid()}```\n"


if __name__ == "__main__":
    sys.stdout.write(document())
