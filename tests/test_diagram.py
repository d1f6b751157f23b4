"""The statechart diagram in the docs is the one the code renders."""

from pathlib import Path

from workflows.diagram import document

DOC = Path(__file__).resolve().parent.parent / "docs" / "statechart.md"


def test_docs_statechart_matches_the_machine() -> None:
    assert DOC.read_text("utf-8") == document(), "docs/statechart.md is stale: run `make diagram`"
