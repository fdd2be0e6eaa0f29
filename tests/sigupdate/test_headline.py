"""The summary line of a sigupdate run (Report.headline), for a person at a terminal."""

from __future__ import annotations

import time
from pathlib import Path

from scanmail.errors import ExitCode
from scanmail.sigupdate.database import FileAge, Freshness
from scanmail.sigupdate.steps import Problem
from scanmail.sigupdate.update import ClamdSync, Report
from scanmail.verdict import SigOutcome

NOW = time.time()
DB = Path("/var/lib/clamav")


def fresh(*files: FileAge, limit: float = 3) -> Freshness:
    return Freshness(DB, files, limit, now=NOW)


DAILY = FileAge("daily.cld", NOW - 2 * 3600, "build time", "27412")
MAIN = FileAge("main.cvd", NOW - 90 * 86400, "build time", "62")


def test_current_signatures_and_a_reload() -> None:
    report = Report(SigOutcome.CURRENT, (), (), fresh(MAIN, DAILY), ClamdSync.RELOADED)
    assert report.headline() == (
        "sigupdate: signatures current (daily 27412, 2 h old), clamd reloaded")


def test_updated_with_clamd_already_running_them_and_without_clamd() -> None:
    running = Report(SigOutcome.UPDATED, (), (), fresh(DAILY), ClamdSync.RUNNING)
    assert running.headline() == (
        "sigupdate: signatures updated (daily 27412, 2 h old), clamd already runs them")
    hand_made = FileAge("local.hdb", NOW - 300, "file time")
    command = Report(SigOutcome.CURRENT, (), (), fresh(hand_made))
    assert command.headline() == "sigupdate: signatures current (local.hdb, 5 min old)"


def test_a_failed_run_names_its_problems_and_the_age_against_the_limit() -> None:
    problems = (Problem("freshclam", ExitCode.TEMPFAIL, "freshclam: network"),
                Problem("source:http://a/x.hdb", ExitCode.FAILURE, "x"),
                Problem("stale", ExitCode.FAILURE, "stale"))
    report = Report(SigOutcome.FAILED, (), problems, fresh(MAIN), ClamdSync.FAILED)
    assert report.headline() == (
        "sigupdate: FAILED: freshclam, 1 source(s), stale; signatures STALE "
        "(main 62, 90 days old, limit 3 days), clamd reload FAILED")


def test_no_database_and_a_busy_run() -> None:
    none = Report(SigOutcome.FAILED, (), (Problem("stale", ExitCode.FAILURE, "x"),), fresh())
    assert none.headline() == (
        "sigupdate: FAILED: stale; no dated signature database in /var/lib/clamav")
    busy = Report(SigOutcome.BUSY, ("another sigupdate is running; nothing done",))
    assert busy.headline() == "sigupdate: another sigupdate is running; nothing done"
