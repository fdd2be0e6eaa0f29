"""Benchmark daysumm: a year of synthetic events, then the time one report takes.

    .venv/bin/python bench/report_bench.py [--days 365] [--per-day 20000] [--keep DIR]

Each day has PER_DAY scan decisions (about 6% quarantined), a delivery event for each
delivered message, a few retries, deferrals, bounces, admin releases, hourly signature
updates and an outage now and then: about two rows per message. Rows go straight into
the events table in the EventLog's schema, in one transaction per day (going through
EventLog.record for 15 million rows would time the inserts, not the report).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

from scanmail.admin.init import create_spool
from scanmail.config import Config
from scanmail.daysumm.html import render_page
from scanmail.daysumm.queries import make_report
from scanmail.daysumm.text import render_text
from scanmail.events import COLUMNS, EventLog

VIRUSES = [f"Win.Trojan.Agent-{n}" for n in range(40)] + ["Eicar-Test-Signature"]
REASONS = (("clean", 0.94), ("banned", 0.035), ("infected", 0.02), ("unchecked", 0.004),
           ("malformed", 0.001))
HOURS = (1, 1, 1, 1, 1, 2, 4, 8, 12, 12, 11, 10, 9, 11, 12, 11, 9, 7, 5, 4, 3, 2, 2, 1)

Row = tuple[object, ...]


def day_rows(day: date, per_day: int, rng: random.Random, serial: Iterator[int]) -> list[Row]:
    """One day of events as table rows, oldest first."""
    start = datetime(day.year, day.month, day.day).timestamp()
    rows: list[Row] = []
    reasons = rng.choices([r for r, _ in REASONS], [w for _, w in REASONS], k=per_day)
    hours = rng.choices(range(24), HOURS, k=per_day)
    for reason, hour in zip(reasons, hours, strict=True):
        moment = start + hour * 3600 + rng.random() * 3600
        qid = f"smtpd{next(serial):012x}"
        rows.append(scan_row(moment, qid, reason, rng))
        if reason == "clean":
            verdict = rng.choices(("delivered", "deferred", "failed"), (0.995, 0.004, 0.001))[0]
            rows.append(_row(moment + 30, "delivery", qid, verdict=verdict,
                             reason="" if verdict == "delivered" else "451 4.3.0 try later"))
            if verdict == "failed":
                rows.append(_row(moment + 31, "bounce", qid))
        elif rng.random() < 0.01:
            rows.append(_row(moment + 3600, "release", qid))
    for _ in range(per_day // 2000):
        rows.append(_row(start + rng.random() * 86400, "retry", f"smtpd{next(serial):012x}",
                         verdict="retry", reason="scanner-down"))
    for hour in range(24):
        rows.append(_row(start + hour * 3600 + 120, "sigupdate", verdict="ok",
                         detail="daily.cld 27573"))
    if rng.random() < 0.1:
        down = start + rng.random() * 80000
        rows += [_row(down, "outage", reason="down"), _row(down + 600, "outage", reason="up")]
    rows.sort(key=lambda row: float(row[0]))  # type: ignore[arg-type]
    return rows


def scan_row(moment: float, qid: str, reason: str, rng: random.Random) -> Row:
    """A scan decision with the envelope and names a real one carries."""
    viruses = rng.choice(VIRUSES) if reason == "infected" else ""
    names = {"banned": "invoice.pdf.exe", "infected": "scan_0042.zip"}.get(reason, "")
    return _row(
        moment, "scan", qid, message_id=f"<{qid}@mx.example.net>",
        sender=f"user{rng.randrange(5000)}@sender{rng.randrange(300)}.example",
        recipients=f"staff{rng.randrange(400)}@corp.example", size=rng.randrange(2000, 300_000),
        verdict="deliver" if reason == "clean" else "quarantine", reason=reason,
        viruses=viruses, attachments=names, scan_ms=rng.randrange(5, 120),
    )


def _row(moment: float, kind: str, qid: str = "", **values: object) -> Row:
    defaults: dict[str, object] = {
        "time": moment, "kind": kind, "qid": qid, "message_id": "", "sender": "",
        "recipients": "", "size": 0, "verdict": "", "reason": "", "viruses": "",
        "attachments": "", "scan_ms": 0, "detail": "", "received": 0.0,
    }
    defaults.update(values)
    return tuple(defaults[column] for column in COLUMNS)


def fill(events: EventLog, last: date, days: int, per_day: int) -> int:
    """Insert the synthetic year; the number of rows."""
    rng = random.Random(2001)
    serial = iter(range(1 << 48))
    sql = f"INSERT INTO events ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"
    total = 0
    for back in range(days - 1, -1, -1):
        rows = day_rows(last - timedelta(days=back), per_day, rng, serial)
        events.db.execute("BEGIN")
        events.db.executemany(sql, rows)
        events.db.execute("COMMIT")
        total += len(rows)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the spool here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-bench-") as scratch:
        root = (args.keep or Path(scratch)) / "spool"
        create_spool(root)
        config = Config.from_mapping({"SPOOL_DIR": str(root), "HOSTNAME": "bench.example"})
        last = date.today() - timedelta(days=1)
        started = time.perf_counter()
        with EventLog(config.var_dir) as events:
            rows = fill(events, last, args.days, args.per_day)
        filled = time.perf_counter() - started
        size = (config.var_dir / "events.sqlite").stat().st_size
        print(f"events: {rows:,} rows over {args.days} days ({args.per_day:,} messages a day), "
              f"{size / 2**30:.2f} GiB, inserted in {filled:.0f} s")
        now = time.time()
        started = time.perf_counter()
        first = make_report(config, last, now)
        print(f"first report (builds the report index once): {time.perf_counter() - started:.2f} s")
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            made = make_report(config, last, now)
            timings.append(time.perf_counter() - started)
        assert made == first, "two reports of the same day differ"
        started = time.perf_counter()
        text, page = render_text(made), render_page(made)
        rendered = time.perf_counter() - started
        median = statistics.median(timings)
        print(f"report of {last} ({made.counts.received:,} messages, "
              f"{made.counts.quarantined:,} quarantined): median {median:.2f} s "
              f"over {args.runs} runs (best {min(timings):.2f} s); rendering text and page "
              f"{rendered * 1000:.0f} ms ({len(text):,} and {len(page):,} characters)")


if __name__ == "__main__":
    main()
