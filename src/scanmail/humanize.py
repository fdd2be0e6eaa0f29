"""Ages, durations, sizes and counts for people: one spelling everywhere (status, lists, report).

Decided once (issue 9): units spelled as a person reads them, with a space, the two
largest that matter: "45 s", "12 min", "3 h 5 min", "4 days 2 h"; sizes in powers of
1024 with one decimal: "681 B", "1.2 MB".
"""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """A length of time, in the two largest units that matter."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days {hours % 24} h" if hours % 24 else f"{hours // 24} days"


def size(value: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def number(value: float) -> str:
    """A count with thousands separators; an average with one decimal when small."""
    if isinstance(value, int) or value >= 100 or value == int(value):
        return f"{round(value):,}"
    return f"{value:,.1f}"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def moment(timestamp: float, with_date: bool = True) -> str:
    """A local time, to the minute or (without the date) the second."""
    return time.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M:%S", time.localtime(timestamp))
