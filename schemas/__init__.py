"""The event contract: JSON Schemas of CONTRACT.md and the typed messages they decode to."""
