"""events: record and read back, the syslog line's keys, values made storable and loggable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from helpers.events import recorded, rows
from scanmail.events import DB_NAME, Event, EventLog
from scanmail.untrusted import one_line, storable

SCAN = Event(kind="scan", qid="smtpd1", message_id="<m1@ext>", sender="ann@ext.example",
             recipients=("bob@corp.example", "cy@corp.example"), size=48213,
             verdict="quarantine", reason="infected", viruses=("Eicar-Test-Signature",),
             attachments=("a.zip", "a.zip/eicar.com"), scan_ms=37, detail="", time=1000.5)


def test_an_event_reads_back_as_it_was_recorded(spool_root: Path) -> None:
    with EventLog(spool_root / "var") as log:
        log.record(SCAN, quiet=True)
        assert log.last("scan") == SCAN
        assert log.last("scan", qid="other") is None
    assert recorded(spool_root / "var", "scan") == [SCAN]
    [row] = rows(spool_root, "scan")
    assert row["recipients"] == "bob@corp.example\ncy@corp.example"
    assert row["attachments"] == "a.zip\na.zip/eicar.com"


def test_a_scan_event_replaces_the_earlier_one_of_its_message(spool_root: Path) -> None:
    with EventLog(spool_root / "var") as log:
        log.record(Event(kind="scan", qid="q1", verdict="retry", time=1.0), quiet=True)
        log.record(Event(kind="retry", qid="q1", reason="scanner-down", time=2.0), quiet=True)
        log.record(Event(kind="retry", qid="q1", reason="scanner-down", time=3.0), quiet=True)
        log.record(Event(kind="scan", qid="q1", verdict="deliver", time=4.0), quiet=True)
        assert log.count("retry", "q1", "scanner-down") == 2
        assert [e.verdict for e in log.query(kinds=["scan"])] == ["deliver"]
    assert [row["kind"] for row in rows(spool_root)] == ["retry", "retry", "scan"]


def test_query_is_a_half_open_time_window_oldest_first(spool_root: Path) -> None:
    with EventLog(spool_root / "var") as log:
        for moment in (30.0, 10.0, 20.0, 40.0):
            log.record(Event(kind="delivery", qid=f"q{int(moment)}", time=moment), quiet=True)
        assert [e.qid for e in log.query(since=10.0, until=40.0)] == ["q10", "q20", "q30"]
        assert [e.qid for e in log.query(since=25.0)] == ["q30", "q40"]


def test_the_log_line_has_qid_first_and_stable_keys() -> None:
    assert SCAN.log_line() == (
        "qid=smtpd1 event=scan from=<ann@ext.example> rcpts=2 size=48213 "
        "verdict=quarantine reason=infected:Eicar-Test-Signature ms=37"
    )
    assert Event(kind="outage", detail="clamd down").log_line() == (
        "qid=- event=outage detail='clamd down'"
    )


def test_recording_logs_one_line_a_warning_for_retries(
    spool_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scanmail.events")
    with EventLog(spool_root / "var") as log:
        log.record(SCAN)
        log.record(Event(kind="retry", qid="q2", reason="scanner-down"))
        log.record(Event(kind="bounce", qid="q3"), quiet=True)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, SCAN.log_line()),
        (logging.WARNING, "qid=q2 event=retry from=<> rcpts=0 size=0 reason=scanner-down"),
    ]


def test_hostile_values_are_stored_whole_and_logged_safe(spool_root: Path) -> None:
    raw = "evil\udcff\x1b[31m\r\nx"  # an undecodable byte, a terminal escape, a line break
    event = Event(kind="scan", qid="q1", sender=raw, reason="banned", time=5.0)
    with EventLog(spool_root / "var") as log:
        log.record(event, quiet=True)
    [row] = rows(spool_root, "scan")
    assert row["sender"] == "evil\ufffd\x1b[31m\r\nx"
    line = event.log_line()
    assert "from=<evil\ufffd?[31m??x>" in line
    assert "\n" not in line and "\x1b" not in line


def test_storable_and_one_line() -> None:
    assert storable("caf\udce9") == "caf\ufffd"
    assert storable("café") == "café"
    assert one_line("a\x00b\x7fc") == "a?b?c"
    assert one_line("x" * 300) == "x" * 199 + "\u2026"
    assert one_line("x" * 10, limit=8) == "xxxxxxx\u2026"
    assert one_line("x" * 200) == "x" * 200


def test_a_file_that_is_not_a_database_is_set_aside_and_a_new_one_started(tmp_path: Path) -> None:
    # Mail matters more than statistics (issue 14): no SpoolError, the damage is kept aside.
    var = tmp_path / "var"
    var.mkdir()
    (var / DB_NAME).write_bytes(b"this is not a database" * 100)
    with EventLog(var) as events:
        events.record(SCAN, quiet=True)
        assert events.last("scan") == SCAN
    [aside] = var.glob(f"{DB_NAME}.damaged-*")
    assert aside.read_bytes() == b"this is not a database" * 100  # kept as it was


def test_the_dry_run_log_leaves_no_trace(tmp_path: Path) -> None:
    log = EventLog.nowhere()
    log.record(SCAN, quiet=True)
    assert log.last("scan") == SCAN
    log.close()
    assert list(tmp_path.iterdir()) == []
