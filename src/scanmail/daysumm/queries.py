"""daysumm aggregation: one day's report from the event database (SQL), the spool as of now.

Everything is counted in SQL over ranges of an index (GROUP BY for the tallies), never by
walking rows in Python, so a report costs the same on a year-old database as on a new
one. A day is a calendar day in local time; its figures depend only on the event
database, so any day can be reported at any time and twice gives the same figures. Only
the backlog, and each blocked message's subject and status, are read "now".
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock_time

from scanmail import delay
from scanmail.config import Config
from scanmail.daysumm.backlog import measure_backlog, read_subject
from scanmail.daysumm.model import (
    CHART_DAYS,
    COUNT_FIELDS,
    HISTORY_DAYS,
    Blocked,
    DayCounts,
    Outages,
    Report,
    Signatures,
    Status,
    Tally,
)
from scanmail.events import EventLog
from scanmail.spool import Spool
from scanmail.untrusted import one_line
from scanmail.verdict import Reason, SigOutcome, Verdict

# Why mail is quarantined, in the order the report lists them.
REASONS = tuple(
    reason.value
    for reason in (Reason.BANNED, Reason.INFECTED, Reason.ENCRYPTED, Reason.UNCHECKED,
                   Reason.MALFORMED)
)
DELIVER = Verdict.DELIVER.value
QUARANTINE = Verdict.QUARANTINE.value
INFECTED = Reason.INFECTED.value
TOP = 10
BLOCKED_LIMIT = 50

# A covering index: each figure is counted over one range of it, so a report reads the
# days it shows and never the table, however old the database.
INDEXES = """
CREATE INDEX IF NOT EXISTS report_verdict ON events(kind, verdict, time, size);
"""

# sigupdate verdicts: signatures known good, and runs that failed or found them stale.
SIG_GOOD = tuple(o.value for o in SigOutcome if o.is_good)
SIG_BAD = (SigOutcome.FAILED.value, SigOutcome.STALE.value)

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
        delay=delay.measure(db, start, end),
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
    return tuple(Tally(one_line(name), count) for name, count in ranked)


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
    return Signatures(last[0], last[1], one_line(last[2], 600), runs, int(failures), good_age)


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
            qid=one_line(qid),
            sender=one_line(sender),
            recipients=tuple(one_line(r) for r in _split(recipients)),
            reason=one_line(reason),
            viruses=tuple(one_line(v) for v in _split(viruses)),
            attachments=tuple(one_line(a) for a in _split(attachments)),
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


def make_report(config: Config, day: date, now: float | None = None) -> Report:
    """The report for one day of this gateway, as of now."""
    with EventLog(config.var_dir) as events:
        return summarize(
            events.db, Spool(config.spool_dir), day, time.time() if now is None else now,
            config.hostname,
        )
