"""The bare durable floor of bench/replay.py: the least any replay must do per event.

Read the JSON Lines file, `json.loads` each line, and bulk-insert the minimal rows
an event needs with the raw driver (sqlite3 or psycopg), one transaction per
batch of 500 (the service's replay batch): an inbox row (source, id, digest) for
deduplication, the cluster's state row (an upsert) and a history row. SQLite with
the service's pragmas (WAL, synchronous=NORMAL). It imports nothing else, so its
start-up is the interpreter's and the driver's.

    python bench/replay_floor.py FILE sqlite:///path.db | postgresql://...
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

BATCH = 500
TABLES = (
    "CREATE TABLE IF NOT EXISTS floor_inbox (source TEXT NOT NULL, event_id TEXT NOT NULL, "
    "digest TEXT NOT NULL, PRIMARY KEY (source, event_id))",
    "CREATE TABLE IF NOT EXISTS floor_clusters (cluster_id TEXT PRIMARY KEY, "
    "state TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS floor_history (id {identity}, cluster_id TEXT NOT NULL, "
    "at TEXT NOT NULL, cause_id TEXT NOT NULL, note TEXT)",
)
# Fixed statements; only the placeholder style differs between the drivers.
INBOX = "INSERT INTO floor_inbox (source, event_id, digest) VALUES (?, ?, ?)"
UPSERT = (
    "INSERT INTO floor_clusters (cluster_id, state, version) VALUES (?, ?, 1) "
    "ON CONFLICT (cluster_id) DO UPDATE SET state = excluded.state, "
    "version = floor_clusters.version + 1"
)
HISTORY = "INSERT INTO floor_history (cluster_id, at, cause_id, note) VALUES (?, ?, ?, ?)"


def connect(url: str) -> tuple[Any, str, str]:
    """(connection, placeholder, identity column) for the URL's driver."""
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn, "?", "INTEGER PRIMARY KEY AUTOINCREMENT"
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    return conn, "%s", "BIGINT PRIMARY KEY GENERATED ALWAYS AS IDENTITY"


def main(file: Path, url: str) -> None:
    events = [json.loads(line) for line in file.read_text("utf-8").splitlines() if line.strip()]
    conn, mark, identity = connect(url)
    for ddl in TABLES:
        conn.execute(ddl.format(identity=identity))
    inbox, upsert, history = (s.replace("?", mark) for s in (INBOX, UPSERT, HISTORY))
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.executemany(inbox, [(e["source"], e["id"], e["time"]) for e in batch])
        cur.executemany(upsert, [(e["subject"], e["type"]) for e in batch])
        cur.executemany(history, [(e["subject"], e["time"], e["id"], e["type"]) for e in batch])
        cur.execute("COMMIT")
    conn.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
