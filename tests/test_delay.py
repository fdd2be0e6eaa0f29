"""The gateway's own delay (issue 11): status and daysumm show median and p99 of the day."""

from __future__ import annotations

import sqlite3
from datetime import date

from helpers.mail import enqueue, message
from helpers.smtp_sink import Sink
from scanmail import delay
from scanmail.admin.status import gather
from scanmail.config import load_config
from scanmail.daysumm.html import render_page
from scanmail.daysumm.queries import make_report
from scanmail.daysumm.text import render_text
from scanmail.events import DB_NAME, Event, EventLog
from scanmail.fwd.forwarder import Forwarder
from scanmail.scan import run


def test_status_and_daysumm_show_the_delay_of_the_day(spool_root, write_env):
    with Sink() as sink:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))
        for i in range(3):
            enqueue(spool_root, message(f"timed {i}"))
        run(config)
        Forwarder(config).run_pass()
        assert len(sink.messages) == 3
    lines = gather(config, 900).lines()
    assert any(line.startswith("mail delay") and "(3 messages)" in line for line in lines)
    report = make_report(config, date.today())
    assert report.delay is not None and report.delay.count == 3
    assert 0 <= report.delay.median <= report.delay.p99 < 600
    assert "Gateway delay (250 to delivery)" in render_text(report)
    assert "Gateway delay" in render_page(report)


def test_median_and_p99_pair_each_delivery_with_its_scan(tmp_path):
    with EventLog(tmp_path) as events:
        for n in range(100):
            qid = f"smtpd{n:04d}"
            events.record(Event(kind="scan", qid=qid, verdict="deliver", reason="clean",
                                time=1000.0 + n, received=1000.0 + n), quiet=True)
            events.record(Event(kind="delivery", qid=qid, verdict="delivered",
                                time=1000.0 + n + (n + 1) / 100), quiet=True)
        # An alert (no scan event) and a released message (scanned as quarantine): not mail
        # the gateway passed on its own.
        events.record(Event(kind="delivery", qid="alert", verdict="delivered", time=1050.0),
                      quiet=True)
        events.record(Event(kind="scan", qid="held", verdict="quarantine", received=1.0,
                            time=2.0), quiet=True)
        events.record(Event(kind="delivery", qid="held", verdict="delivered", time=1060.0),
                      quiet=True)
        measured = delay.measure(events.db, 0, 2000)
    assert measured is not None and measured.count == 100
    assert abs(measured.median - 0.50) < 1e-6 and abs(measured.p99 - 1.00) < 1e-6


def test_an_older_event_database_gains_the_received_column(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT "
               "NOT NULL, qid TEXT NOT NULL DEFAULT '', message_id TEXT NOT NULL DEFAULT '', "
               "sender TEXT NOT NULL DEFAULT '', recipients TEXT NOT NULL DEFAULT '', size "
               "INTEGER NOT NULL DEFAULT 0, verdict TEXT NOT NULL DEFAULT '', reason TEXT NOT "
               "NULL DEFAULT '', viruses TEXT NOT NULL DEFAULT '', attachments TEXT NOT NULL "
               "DEFAULT '', scan_ms INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO events (time, kind, qid) VALUES (5.0, 'scan', 'old')")
    db.commit()
    db.close()
    with EventLog(tmp_path) as events:
        (old,) = events.query()
        assert old.qid == "old" and old.received == 0.0
        events.record(Event(kind="scan", qid="new", received=7.0), quiet=True)
        assert events.last("scan", "new").received == 7.0  # type: ignore[union-attr]
