"""The gateway's own delay: the receiver's 250 to the forwarder's delivery (issue 11).

A delivered message's delay is its delivery event's time minus its scan event's
`received` (the incoming file's mtime, set when the receiver completed it, just before
its 250). Only mail the scanner passed counts: alerts, reports and released mail have no
such pair. Read by `scanmail status` and daysumm.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from scanmail.humanize import duration

DELAYS = """
SELECT d.time - s.received FROM events AS d
JOIN events AS s ON s.kind = 'scan' AND s.qid = d.qid
WHERE d.kind = 'delivery' AND d.verdict = 'delivered' AND d.time >= ? AND d.time < ?
  AND s.verdict = 'deliver' AND s.received > 0
"""


@dataclass(frozen=True)
class Delay:
    """Median and p99 of the gateway's delay over some messages, in seconds."""

    count: int
    median: float
    p99: float

    def describe(self) -> str:
        return (f"median {seconds(self.median)}, p99 {seconds(self.p99)} "
                f"({self.count} messages)")


def seconds(value: float) -> str:
    """A delay: milliseconds matter below ten seconds, minutes above."""
    return f"{value:.3f} s" if value < 10 else duration(value)


def measure(db: sqlite3.Connection, start: float, end: float) -> Delay | None:
    """The delay of the mail delivered in [start, end); None if there was none."""
    values = sorted(max(0.0, float(row[0])) for row in db.execute(DELAYS, (start, end)))
    if not values:
        return None
    return Delay(len(values), values[(len(values) - 1) // 2],
                 values[min(len(values) - 1, int(0.99 * len(values)))])
