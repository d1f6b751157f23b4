"""`gocluster` with a bug planted, for the redrive test: run as
`python -m tests.planted_bug run ...`. While PLANTED_BUG_EVENT_TYPE names an input event
type, applying such an event raises, as a bug in the handler would; the engine sends
the record to the DLQ (`invalid_transition`, "internal error") and the rest apply. The
fix is to run the real `gocluster` again.
"""

from __future__ import annotations

import os
from typing import Any

from consumers.cli import main
from workflows.decider import Decider

_real_apply = Decider.apply


def _buggy_apply(self: Decider, cluster: Any, machine: Any, event: Any) -> Any:
    if event.type.value == os.environ.get("PLANTED_BUG_EVENT_TYPE"):
        raise KeyError("planted bug: a field the handler expected")
    return _real_apply(self, cluster, machine, event)


if __name__ == "__main__":
    Decider.apply = _buggy_apply  # type: ignore[method-assign]
    main()
