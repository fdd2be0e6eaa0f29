"""The one reader of the event database for tests: raw rows, or Events as the product reads them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scanmail.events import DB_NAME, Event, EventLog


def rows(spool_root: Path, kind: str | None = None) -> list[sqlite3.Row]:
    """The rows of SPOOL/var/events.sqlite in the order written (by id), of one kind if given.

    Raw rows, so a test can check what is stored column by column (row["reason"]).
    """
    db = sqlite3.connect(spool_root / "var" / DB_NAME)
    db.row_factory = sqlite3.Row
    try:
        if kind is None:
            return db.execute("SELECT * FROM events ORDER BY id").fetchall()
        return db.execute("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    finally:
        db.close()


def recorded(var_dir: Path, *kinds: str) -> list[Event]:
    """The Events in var_dir's database, oldest first (EventLog.query), of some kinds only."""
    with EventLog(var_dir) as log:
        return list(log.query(kinds=kinds))
