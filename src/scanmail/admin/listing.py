"""`scanmail quarantine list` (and purge) as aligned columns a person can read down.

Every value is made visible first (untrusted.visible: a sender or a file name comes from
the message, and a bidi override or an escape sequence would break the line), then
measured in terminal cells (a CJK character takes two, a combining mark none), so the
columns line up whatever the mail held; a long value is cut with an ellipsis.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from scanmail.humanize import duration, size
from scanmail.quarantine import Record
from scanmail.untrusted import visible

GAP = "  "
ELLIPSIS = "\u2026"
RCPTS_SHOWN = 3


@dataclass(frozen=True)
class Column:
    """One column: the widest it may grow (0: no limit) and which side it keeps flush."""

    limit: int = 0
    right: bool = False


# id, age, reason, virus or banned name, sender, recipients, size
COLUMNS = (Column(), Column(), Column(), Column(40), Column(40), Column(40), Column(right=True))


def cells(text: str) -> int:
    """How many terminal cells text takes: 2 for wide characters, 0 for combining marks."""
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def clip(text: str, limit: int) -> str:
    """text cut to at most limit cells, ending in an ellipsis when cut (0: no limit)."""
    if not limit or cells(text) <= limit:
        return text
    out, used = "", 0
    for char in text:
        width = cells(char)
        if used + width > limit - 1:
            break
        out += char
        used += width
    return out + ELLIPSIS


def align(rows: Sequence[Sequence[str]], columns: Sequence[Column]) -> list[str]:
    """The rows as lines: each value visible and clipped, each column as wide as its widest."""
    shown = [[clip(visible(value), column.limit) for value, column in zip(row, columns,
                                                                           strict=True)]
             for row in rows]
    widths = [max((cells(row[i]) for row in shown), default=0) for i in range(len(columns))]
    lines = []
    for row in shown:
        parts = []
        for value, column, width in zip(row, columns, widths, strict=True):
            pad = " " * (width - cells(value))
            parts.append(pad + value if column.right else value + pad)
        lines.append(GAP.join(parts).rstrip())
    return lines


def recipients(record: Record) -> str:
    shown = ",".join(record.recipients[:RCPTS_SHOWN])
    more = len(record.recipients) - RCPTS_SHOWN
    return shown + (f",+{more}" if more > 0 else "")


def row(record: Record, now: float) -> tuple[str, ...]:
    """One record's values: id, age, reason, virus or banned name, sender, recipients, size."""
    return (record.qid, duration(max(0.0, now - record.time)), record.reason,
            record.what or "-", f"<{record.sender}>", recipients(record) or "-",
            size(record.size))


def quarantine_lines(records: Sequence[Record], now: float | None = None) -> list[str]:
    """The quarantine list, one aligned line per record, in the order given."""
    now = time.time() if now is None else now
    return align([row(record, now) for record in records], COLUMNS)
