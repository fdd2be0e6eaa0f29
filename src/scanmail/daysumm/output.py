"""Where a daysumm report goes: mailed to ADMIN_EMAIL, written as a page, or printed."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

from scanmail import durable
from scanmail.config import Config
from scanmail.daysumm.html import render_mail, render_page
from scanmail.daysumm.model import Report
from scanmail.daysumm.queries import make_report
from scanmail.daysumm.text import render_text
from scanmail.errors import ExitCode, GatewayError
from scanmail.notify import build_message, enqueue
from scanmail.spool import Spool

log = logging.getLogger(__name__)

# Figures whose jump is named in the mail's Subject.
JUMP_WATCH = ("received", "quarantined", "infected", "banned", "unchecked", "malformed",
              "retried", "failed", "bounces")


class PageError(GatewayError):
    """The statistics page cannot be written."""

    exit_code = ExitCode.CANTCREAT


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
    try:
        durable.write_file(path, render_page(report).encode("utf-8"), 0o644,
                           partial=path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    except OSError as exc:
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
