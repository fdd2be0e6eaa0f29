"""The daysumm report as values: a day's figures, tallies, outages, backlog and blocked mail."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from enum import Enum
from typing import NamedTuple

from scanmail.delay import Delay

HISTORY_DAYS = 36  # the 30 charted days, plus 6 before them for the first rolling average
CHART_DAYS = 30
COMPARE_DAYS = 7

@dataclass(frozen=True)
class Tally:
    """A name and how often it was seen."""

    name: str
    count: int


@dataclass(frozen=True)
class DayCounts:
    """One day's message figures."""

    day: date
    received: int = 0
    delivered: int = 0
    quarantined: int = 0
    banned: int = 0
    infected: int = 0
    encrypted: int = 0
    unchecked: int = 0
    malformed: int = 0
    retried: int = 0
    released: int = 0
    deleted: int = 0
    size: int = 0
    forwarded: int = 0
    deferred: int = 0
    failed: int = 0
    bounces: int = 0


COUNT_FIELDS = tuple(f.name for f in fields(DayCounts) if f.name != "day")


@dataclass(frozen=True)
class Outages:
    """Scanner outages overlapping the day."""

    count: int = 0
    downtime: float = 0.0  # seconds within the day
    down_at_end: bool = False


@dataclass(frozen=True)
class Signatures:
    """The last signature update known at the end of the day."""

    time: float
    verdict: str
    detail: str
    runs: int  # sigupdate runs during the day
    failures: int  # of them, failed or found the signatures stale
    good_age: float | None  # seconds from the last good update to the end of the day (or now)


@dataclass(frozen=True)
class Folder:
    """A spool folder now: complete files, the oldest one's age, bytes."""

    name: str
    files: int
    oldest_age: float | None
    size: int


class Status(Enum):
    """Where a quarantined message stands now."""

    QUARANTINED = "quarantined"
    RELEASED = "released"
    DELETED = "deleted"


@dataclass(frozen=True)
class Blocked:
    """A message quarantined during the day."""

    time: float
    qid: str
    sender: str
    recipients: tuple[str, ...]
    reason: str
    viruses: tuple[str, ...]
    attachments: tuple[str, ...]
    subject: str | None  # None: its quarantine record is gone
    status: Status


@dataclass(frozen=True)
class Report:
    """Everything daysumm shows for one day."""

    day: date
    host: str
    generated: float
    partial: bool  # the day was not over when the report was made
    history: tuple[DayCounts, ...]  # HISTORY_DAYS days, oldest first, ending with the day
    virus_history: tuple[tuple[str, tuple[int, ...]], ...]  # name, counts per charted day
    viruses: tuple[Tally, ...]
    senders: tuple[Tally, ...]
    recipients: tuple[Tally, ...]
    attachments: tuple[Tally, ...]
    failures: tuple[Tally, ...]
    hours: tuple[int, ...]
    scan_ms: int  # average scan time
    delay: Delay | None  # the gateway's own delay, 250 to delivery (issue 11)
    outages: Outages
    signatures: Signatures | None
    backlog: tuple[Folder, ...]
    blocked: tuple[Blocked, ...]

    @property
    def counts(self) -> DayCounts:
        return self.history[-1]

    @property
    def previous(self) -> tuple[DayCounts, ...]:
        """The COMPARE_DAYS days before the report day."""
        return self.history[-1 - COMPARE_DAYS : -1]

    @property
    def charted(self) -> tuple[DayCounts, ...]:
        return self.history[-CHART_DAYS:]

    def compare(self, name: str) -> Change:
        """A figure of the day against its average over the previous COMPARE_DAYS days."""
        average = sum(int(getattr(day, name)) for day in self.previous) / COMPARE_DAYS
        return Change(int(getattr(self.counts, name)), average)

    def rolling_average(self) -> tuple[float, ...]:
        """Messages received per day, averaged over 7 days ending with each charted day."""
        received = [day.received for day in self.history]
        first = len(received) - CHART_DAYS
        return tuple(
            sum(received[i - COMPARE_DAYS + 1 : i + 1]) / COMPARE_DAYS
            for i in range(first, len(received))
        )


class Change(NamedTuple):
    """A day's figure beside its average over the previous days."""

    value: int
    average: float

    @property
    def is_jump(self) -> bool:
        """Far enough from the average that the admin should look (both ways: a drop too)."""
        if abs(self.value - self.average) < 5:
            return False
        return self.average == 0 or not self.average / 2 < self.value < self.average * 2

    @property
    def percent(self) -> str:
        """The change as a signed percentage; 'new' when there was nothing before."""
        if self.average == 0:
            return "new" if self.value else ""
        return f"{(self.value - self.average) / self.average:+.0%}"
