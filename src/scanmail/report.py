"""daysumm aggregation: one day's figures from the event database, and the spool's backlog.

Everything is counted in SQL over ranges of an index (GROUP BY for the tallies), never by
walking rows in Python, so a report costs the same on a year-old database as on a new
one. A day is a calendar day in local time; its figures depend only on the event
database, so any day can be reported at any time and twice gives the same figures. Only
the backlog, and each blocked message's subject and status, are read "now".
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from email.header import decode_header, make_header
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from scanmail import quarantine
from scanmail.config import Config
from scanmail.errors import ExitCode, GatewayError
from scanmail.events import EventLog, storable
from scanmail.notify import build_message, enqueue
from scanmail.report_html import render_mail, render_page
from scanmail.report_text import render_text
from scanmail.rules import Reason, Verdict
from scanmail.spool import Spool, list_complete

log = logging.getLogger(__name__)

# Why mail is quarantined, in the order the report lists them.
REASONS = tuple(
    reason.value
    for reason in (Reason.BANNED, Reason.INFECTED, Reason.UNCHECKED, Reason.MALFORMED)
)
DELIVER = Verdict.DELIVER.value
QUARANTINE = Verdict.QUARANTINE.value
INFECTED = Reason.INFECTED.value
HISTORY_DAYS = 36  # the 30 charted days, plus 6 before them for the first rolling average
CHART_DAYS = 30
COMPARE_DAYS = 7
TOP = 10
BLOCKED_LIMIT = 50
# Figures whose jump is named in the mail's Subject.
JUMP_WATCH = ("received", "quarantined", "infected", "banned", "unchecked", "malformed",
              "retried", "failed", "bounces")
MAX_TEXT = 200

# A covering index: each figure is counted over one range of it, so a report reads the
# days it shows and never the table, however old the database.
INDEXES = """
CREATE INDEX IF NOT EXISTS report_verdict ON events(kind, verdict, time, size);
"""

# sigupdate verdicts: signatures known good, and runs that failed or found them stale.
SIG_GOOD = ("ok", "updated", "current", "fresh")
SIG_BAD = ("failed", "stale")

# (DayCounts field, kind, verdict or None for any): figures that are plain counts.
TALLIES = (
    ("delivered", "scan", DELIVER),
    ("quarantined", "scan", QUARANTINE),
    ("forwarded", "delivery", "delivered"),
    ("deferred", "delivery", "deferred"),
    ("failed", "delivery", "failed"),
    ("released", "release", None),
    ("deleted", "delete", None),
    ("bounces", "bounce", None),
)

# Control characters, and the bidirectional overrides that make "invoice\u202efdp.exe" show
# as "invoiceexe.pdf" (CVE-2021-42574 style): shown as '?' so the name reads as it is.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """A value that came from a message, safe to show: valid UTF-8, no controls, bounded."""
    text = _UNPRINTABLE.sub("?", storable(text))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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


def day_bounds(day: date) -> tuple[float, float]:
    """The day's start and end as timestamps: local midnights (23 or 25 hours at DST)."""
    start = datetime.combine(day, clock_time.min).astimezone()
    end = datetime.combine(day + timedelta(days=1), clock_time.min).astimezone()
    return start.timestamp(), end.timestamp()


def summarize(db: sqlite3.Connection, spool: Spool, day: date, now: float, host: str) -> Report:
    """The report for one day, as of now."""
    db.executescript(INDEXES)
    start, end = day_bounds(day)
    days = [day - timedelta(days=n) for n in range(HISTORY_DAYS - 1, -1, -1)]
    return Report(
        day=day,
        host=host,
        generated=now,
        partial=now < end,
        history=count_days(db, days),
        virus_history=count_viruses_by_day(db, days[-CHART_DAYS:]),
        viruses=tally_viruses(db, start, end),
        senders=tally_blocked(db, "sender", start, end),
        recipients=tally_blocked(db, "recipients", start, end),
        attachments=tally_blocked(db, "attachments", start, end),
        failures=tally_failures(db, start, end),
        hours=count_hours(db, start, end),
        scan_ms=average_scan_ms(db, start, end),
        outages=measure_outages(db, start, min(end, now)),
        signatures=last_signatures(db, start, min(end, now)),
        backlog=measure_backlog(spool, now),
        blocked=list_blocked(db, spool, start, end, now),
    )


def count_days(db: sqlite3.Connection, days: Sequence[date]) -> tuple[DayCounts, ...]:
    """Each day's message figures."""
    return tuple(count_day(db, day) for day in days)


def count_day(db: sqlite3.Connection, day: date) -> DayCounts:
    """One day's figures, each a count over one range of an index (no table reads)."""
    start, end = day_bounds(day)
    figures: Counter[str] = Counter()
    for name, kind, verdict in TALLIES:
        if verdict is None:
            sql = "SELECT count(*), 0 FROM events WHERE kind = ? AND time >= ? AND time < ?"
            args: tuple[object, ...] = (kind, start, end)
        else:
            sql = ("SELECT count(*), total(size) FROM events "
                   "WHERE kind = ? AND verdict = ? AND time >= ? AND time < ?")
            args = (kind, verdict, start, end)
        count, size = db.execute(sql, args).fetchone()
        figures[name] += count
        figures["size"] += int(size) if kind == "scan" else 0
    figures["received"] = _count(db, "SELECT count(*)", "scan", start, end)
    figures["retried"] = _count(db, "SELECT count(DISTINCT qid)", "retry", start, end)
    reasons = db.execute(
        "SELECT reason, count(*) FROM events WHERE kind = 'scan' AND verdict = ? "
        "AND time >= ? AND time < ? GROUP BY reason",
        (QUARANTINE, start, end),
    )
    figures.update({reason: count for reason, count in reasons if reason in REASONS})
    return DayCounts(day, **{name: figures[name] for name in COUNT_FIELDS})


def _count(db: sqlite3.Connection, select: str, kind: str, start: float, end: float) -> int:
    row = db.execute(f"{select} FROM events WHERE kind = ? AND time >= ? AND time < ?",
                     (kind, start, end)).fetchone()
    return int(row[0])


def _split(text: str) -> list[str]:
    return [item for item in text.split("\n") if item]


def _top(counter: Counter[str], limit: int = TOP) -> tuple[Tally, ...]:
    """The most frequent names, ties by name, made printable."""
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return tuple(Tally(printable(name), count) for name, count in ranked)


def count_viruses_by_day(
    db: sqlite3.Connection, days: Sequence[date]
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each virus name with its count per day, most frequent first."""
    per_name: dict[str, list[int]] = {}
    for n, day in enumerate(days):
        for tally in tally_viruses(db, *day_bounds(day)):
            per_name.setdefault(tally.name, [0] * len(days))[n] += tally.count
    ranked = sorted(per_name.items(), key=lambda item: (-sum(item[1]), item[0]))
    return tuple((name, tuple(counts)) for name, counts in ranked)


def tally_viruses(db: sqlite3.Connection, start: float, end: float) -> tuple[Tally, ...]:
    """Every virus found during the day, with the number of messages it was in."""
    counter: Counter[str] = Counter()
    rows = db.execute(
        "SELECT viruses, count(*) FROM events WHERE kind = 'scan' AND verdict = ? "
        "AND time >= ? AND time < ? AND reason = ? GROUP BY viruses",
        (QUARANTINE, start, end, INFECTED),
    )
    for viruses, count in rows:
        for name in set(_split(viruses)):
            counter[name] += count
    return _top(counter, limit=len(counter))


def tally_blocked(
    db: sqlite3.Connection, column: str, start: float, end: float
) -> tuple[Tally, ...]:
    """The most frequent senders, recipients or attachment names of quarantined mail."""
    if column not in ("sender", "recipients", "attachments"):
        raise ValueError(column)
    counter: Counter[str] = Counter()
    rows = db.execute(
        f"SELECT {column}, count(*) FROM events WHERE kind = 'scan' AND verdict = ? "
        f"AND time >= ? AND time < ? GROUP BY {column}",
        (QUARANTINE, start, end),
    )
    for value, count in rows:
        names = [value or "<>"] if column == "sender" else set(_split(value))
        for name in names:
            counter[name] += count
    return _top(counter)


def tally_failures(db: sqlite3.Connection, start: float, end: float) -> tuple[Tally, ...]:
    """Why deliveries failed during the day."""
    rows = db.execute(
        "SELECT reason, count(*) FROM events WHERE kind = 'delivery' AND time >= ? AND time < ? "
        "AND verdict = 'failed' GROUP BY reason",
        (start, end),
    )
    return _top(Counter({reason or "(no reason given)": count for reason, count in rows}))


def count_hours(db: sqlite3.Connection, start: float, end: float) -> tuple[int, ...]:
    """Messages received in each local hour of the day."""
    hours = [0] * 24
    rows = db.execute(
        "SELECT CAST(strftime('%H', time, 'unixepoch', 'localtime') AS INTEGER), count(*) "
        "FROM events WHERE kind = 'scan' AND time >= ? AND time < ? GROUP BY 1",
        (start, end),
    )
    for hour, count in rows:
        hours[hour] += count
    return tuple(hours)


def average_scan_ms(db: sqlite3.Connection, start: float, end: float) -> int:
    """The average time a scan took during the day."""
    row = db.execute(
        "SELECT avg(scan_ms) FROM events WHERE kind = 'scan' AND time >= ? AND time < ?",
        (start, end),
    ).fetchone()
    return round(row[0] or 0)


def measure_outages(db: sqlite3.Connection, start: float, end: float) -> Outages:
    """Scanner outages begun during [start, end), and the downtime within it."""
    before = db.execute(
        "SELECT reason FROM events WHERE kind = 'outage' AND time < ? "
        "ORDER BY time DESC, id DESC LIMIT 1",
        (start,),
    ).fetchone()
    down_since = start if before and before[0] == "down" else None
    count, downtime = 0, 0.0
    rows = db.execute(
        "SELECT time, reason FROM events WHERE kind = 'outage' AND time >= ? AND time < ? "
        "ORDER BY time, id",
        (start, end),
    )
    for moment, reason in rows:
        if reason == "down" and down_since is None:
            count, down_since = count + 1, moment
        elif reason == "up" and down_since is not None:
            downtime, down_since = downtime + moment - down_since, None
    if down_since is not None:
        downtime += max(0.0, end - down_since)
    return Outages(count, downtime, down_since is not None)


def last_signatures(db: sqlite3.Connection, start: float, end: float) -> Signatures | None:
    """The newest signature update before the end of the day, and the day's runs."""
    last = db.execute(
        "SELECT time, verdict, detail FROM events WHERE kind = 'sigupdate' AND time < ? "
        "ORDER BY time DESC, id DESC LIMIT 1",
        (end,),
    ).fetchone()
    if last is None:
        return None
    bad = ",".join("?" * len(SIG_BAD))
    runs, failures = db.execute(
        f"SELECT count(*), total(verdict IN ({bad})) FROM events WHERE kind = 'sigupdate' "
        "AND time >= ? AND time < ?",
        (*SIG_BAD, start, end),
    ).fetchone()
    good = ",".join("?" * len(SIG_GOOD))
    [good_time] = db.execute(
        f"SELECT max(time) FROM events WHERE kind = 'sigupdate' AND verdict IN ({good}) "
        "AND time < ?",
        (*SIG_GOOD, end),
    ).fetchone()
    good_age = None if good_time is None else end - good_time
    return Signatures(last[0], last[1], printable(last[2], 600), runs, int(failures), good_age)


def measure_folder(spool: Spool, name: str, now: float) -> Folder:
    """Complete spool files waiting in a folder, the oldest one's age, and their bytes."""
    files = 0
    size = 0
    oldest: float | None = None
    for path in list_complete(spool.folder(name)):
        try:
            st = path.stat()
        except FileNotFoundError:  # moved on while we looked
            continue
        files += 1
        size += st.st_size
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    return Folder(name, files, None if oldest is None else max(0.0, now - oldest), size)


def measure_quarantine(spool: Spool, now: float) -> Folder:
    """Quarantined messages, the oldest one's age, and the bytes of everything kept."""
    oldest: float | None = None
    ids = quarantine.list_ids(spool)
    for qid in ids:
        with contextlib.suppress(FileNotFoundError):
            mtime = (spool.quarantine / qid).stat().st_mtime
            oldest = mtime if oldest is None else min(oldest, mtime)
    size = 0
    for top, _dirs, names in os.walk(spool.quarantine):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                size += os.lstat(os.path.join(top, name)).st_size
    return Folder("quarantine", len(ids), None if oldest is None else max(0.0, now - oldest), size)


def measure_backlog(spool: Spool, now: float) -> tuple[Folder, ...]:
    """Mail waiting now in incoming, outgoing and failed; the quarantine's size."""
    return (
        measure_folder(spool, "incoming", now),
        measure_folder(spool, "outgoing", now),
        measure_folder(spool, "failed", now),
        measure_quarantine(spool, now),
    )


def list_blocked(
    db: sqlite3.Connection, spool: Spool, start: float, end: float, now: float
) -> tuple[Blocked, ...]:
    """The day's quarantined messages, newest first, with their status as of now."""
    rows = db.execute(
        "SELECT time, qid, sender, recipients, reason, viruses, attachments FROM events "
        "WHERE kind = 'scan' AND time >= ? AND time < ? AND verdict = ? "
        "ORDER BY time DESC, id DESC LIMIT ?",
        (start, end, QUARANTINE, BLOCKED_LIMIT),
    ).fetchall()
    statuses = _admin_actions(db, [row[1] for row in rows], now)
    return tuple(
        Blocked(
            time=moment,
            qid=printable(qid),
            sender=printable(sender),
            recipients=tuple(printable(r) for r in _split(recipients)),
            reason=printable(reason),
            viruses=tuple(printable(v) for v in _split(viruses)),
            attachments=tuple(printable(a) for a in _split(attachments)),
            subject=read_subject(spool, qid),
            status=statuses.get(qid, Status.QUARANTINED),
        )
        for moment, qid, sender, recipients, reason, viruses, attachments in rows
    )


def _admin_actions(
    db: sqlite3.Connection, qids: Sequence[str], now: float
) -> dict[str, Status]:
    """The last release or delete of each qid up to now."""
    if not qids:
        return {}
    marks = ",".join("?" * len(qids))
    rows = db.execute(
        f"SELECT qid, kind FROM events WHERE kind IN ('release', 'delete') AND time <= ? "
        f"AND qid IN ({marks}) ORDER BY time, id",
        (now, *qids),
    )
    actions = {"release": Status.RELEASED, "delete": Status.DELETED}
    return {qid: actions[kind] for qid, kind in rows}


def read_subject(spool: Spool, qid: str) -> str | None:
    """The Subject in a quarantined message's record, decoded; None if there is no record."""
    try:
        subject = quarantine.read_record(spool, qid).subject
    except GatewayError:
        return None
    # An undecodable encoded-word is shown as it came: a clue in itself.
    with contextlib.suppress(ValueError, LookupError, UnicodeError, AssertionError):
        subject = str(make_header(decode_header(subject)))
    return printable(subject)


class PageError(GatewayError):
    """The statistics page cannot be written."""

    exit_code = ExitCode.CANTCREAT


def make_report(config: Config, day: date, now: float | None = None) -> Report:
    """The report for one day of this gateway, as of now."""
    with EventLog(config.var_dir) as events:
        return summarize(
            events.db, Spool(config.spool_dir), day, time.time() if now is None else now,
            config.hostname,
        )


def subject_line(report: Report) -> str:
    """The report mail's Subject: the day's headline figures, and what is unusual."""
    counts = report.counts
    text = (
        f"[scanmail] {report.day.isoformat()}: {counts.received:,} received, "
        f"{counts.quarantined:,} quarantined, {counts.infected:,} infected"
    )
    unusual = [name for name in JUMP_WATCH if report.compare(name).is_jump]
    if unusual:
        text += " - unusual: " + ", ".join(unusual)
    return text + (" (so far)" if report.partial else "")


def mail_report(config: Config, report: Report) -> Path:
    """Queue the report for ADMIN_EMAIL as text and HTML alternatives."""
    msg = build_message(
        config, [config.admin_email], subject_line(report), render_text(report),
        html=render_mail(report),
    )
    path = enqueue(Spool(config.spool_dir), msg, [config.admin_email])
    log.info("qid=%s report=%s mailed to=<%s>", path.name, report.day, config.admin_email)
    return path


def write_page(report: Report, path: Path) -> None:
    """Write the statistics page atomically, readable by a web server."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(render_page(report), encoding="utf-8")
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise PageError(f"{path}: cannot write the statistics page: {exc.strerror}") from exc
    log.info("report=%s page=%s", report.day, path)


def run(
    config: Config, day: date, to_stdout: bool = False, page: Path | None = None,
    now: float | None = None,
) -> str:
    """daysumm: report the day; mail it unless it is printed or a page is written; the text."""
    report = make_report(config, day, now)
    if page is not None:
        write_page(report, page)
    if not to_stdout and page is None:
        mail_report(config, report)
    return render_text(report)
