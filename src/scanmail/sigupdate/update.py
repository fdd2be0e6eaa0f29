"""The sigupdate run: every step in turn, its event, and one alert per failing streak.

The seed fetched its scanner's data files weekly by FTP and trusted the result. Here each
step is checked: freshclam's exit status is read (freshclam.py), every extra file must load
in ClamAV before it replaces anything (sigsources.py), a reload counts only once clamd
detects a canary signature written with it (clamdctl.py, canary.py), and the age of the
newest signatures is compared with SIG_MAX_AGE_DAYS (sigdb.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from scanmail.config import Config
from scanmail.errors import ConfigError, ExitCode
from scanmail.events import Event, EventLog
from scanmail.humanize import duration
from scanmail.notify import alert_admin
from scanmail.sigupdate.database import Freshness, freshness, snapshot
from scanmail.sigupdate.freshclam import FRESHCLAM_TIMEOUT, run_freshclam
from scanmail.sigupdate.reload import clamd_state, sync_clamd
from scanmail.sigupdate.sources import target_name, update_source
from scanmail.sigupdate.steps import Problem, StepError, Steps
from scanmail.spool import Spool, run_lock
from scanmail.verdict import EventKind, SigOutcome

log = logging.getLogger(__name__)

LOCK_NAME = "sigupdate.lock"
STREAK_LOOKBACK = 8 * 86400.0  # covers a weekly cron: the seed's schedule
UPDATE_VERDICTS = frozenset({SigOutcome.UPDATED, SigOutcome.CURRENT, SigOutcome.FAILED})

OK, TEMP, CONF, FAIL = ExitCode.OK, ExitCode.TEMPFAIL, ExitCode.CONFIG, ExitCode.FAILURE


class ClamdSync(StrEnum):
    """What a run did to clamd, for the summary line."""

    NOT_ASKED = "not asked"  # the command scanner, or no database folder
    RELOADED = "reloaded"
    RUNNING = "already runs them"
    FAILED = "reload FAILED"


@dataclass(frozen=True)
class Report:
    """What one run found: a verdict, one line per step, and the problems."""

    verdict: SigOutcome
    lines: tuple[str, ...]
    problems: tuple[Problem, ...] = ()
    fresh: Freshness | None = None  # the signatures' age after the run
    clamd: ClamdSync = ClamdSync.NOT_ASKED

    def headline(self) -> str:
        """The one line a hand run shows on a terminal (the CLI decides when):
        "sigupdate: signatures current (daily 27412, 2 h old), clamd reloaded"."""
        if self.verdict is SigOutcome.BUSY or self.fresh is None:
            return "sigupdate: " + "; ".join(self.lines)
        failed = f"FAILED: {_subject(self.problems)}; " if self.problems else ""
        line = f"sigupdate: {failed}{_signatures(self.verdict, self.fresh)}"
        if self.clamd is not ClamdSync.NOT_ASKED:
            line += f", clamd {self.clamd}"
        return line

    @property
    def exit_code(self) -> ExitCode:
        """Worst first: config (an admin must act), other failure, temporary."""
        codes = {problem.exit_code for problem in self.problems}
        for code in (CONF, FAIL, TEMP):
            if code in codes:
                return code
        return OK

    def summary(self) -> str:
        return "; ".join(self.lines)

    def event(self) -> Event:
        keys = " ".join(problem.key for problem in self.problems)
        return Event(kind=EventKind.SIGUPDATE, verdict=self.verdict, reason=keys,
                     detail=self.summary())


def _signatures(verdict: SigOutcome, fresh: Freshness) -> str:
    """"signatures current (daily 27412, 2 h old)": the state and the newest file."""
    newest = fresh.newest
    if newest is None:
        return f"no dated signature database in {fresh.directory}"
    if verdict in (SigOutcome.UPDATED, SigOutcome.CURRENT):
        state = verdict.value
    else:
        state = "STALE" if fresh.is_stale else "fresh"
    name = f"{_stem(newest.name)} {newest.version}" if newest.version else newest.name
    limit = f", limit {fresh.limit_days:g} days" if fresh.is_stale else ""
    return f"signatures {state} ({name}, {duration(fresh.now - newest.made)} old{limit})"


def _stem(name: str) -> str:
    """daily.cld -> daily: the database's name as freshclam's log shows it."""
    return name.rpartition(".")[0] or name


def _sources(config: Config, steps: Steps) -> None:
    seen: set[str] = set()
    for url in config.sig_sources:
        def step(url: str = url) -> str:
            name = target_name(url)
            if name in seen:
                raise ConfigError(f"SIG_SOURCES: a second source named {name}")
            seen.add(name)
            return update_source(config.sig_db_dir, url, name).line()

        steps.attempt(f"source:{url}", step, prefix=f"{url}: ")


def _missing(db_dir: Path) -> str:
    raise StepError(f"SIG_DB_DIR {db_dir} is not a directory", CONF)


def _update(config: Config, freshclam_timeout: float) -> Report:
    steps = Steps()
    clamd = ClamdSync.NOT_ASKED
    db_dir = config.sig_db_dir
    before = snapshot(db_dir)
    if config.freshclam_command:
        argv = config.freshclam_command
        steps.attempt("freshclam", lambda: run_freshclam(argv, freshclam_timeout))
    if not db_dir.is_dir():
        steps.attempt("database", lambda: _missing(db_dir))
    else:
        _sources(config, steps)
        if config.scanner == "clamd":  # the command scanner reads the files at each scan
            new = snapshot(db_dir) != before
            clamd = ClamdSync.FAILED

            def reload() -> str:
                nonlocal clamd
                synced = sync_clamd(config, new)
                clamd = ClamdSync.RELOADED if synced.reloaded else ClamdSync.RUNNING
                return synced.line

            steps.attempt("reload", reload)
    fresh = freshness(config)
    if fresh.is_stale:
        steps.problems.append(Problem("stale", FAIL, fresh.summary()))
    steps.lines.append(fresh.summary())
    changed = snapshot(db_dir) != before
    verdict = SigOutcome.FAILED if steps.problems else (
        SigOutcome.UPDATED if changed else SigOutcome.CURRENT)
    return Report(verdict, tuple(steps.lines), tuple(steps.problems), fresh, clamd)


def _previous_problems(events: EventLog) -> frozenset[str]:
    """The problem keys of the last update run, if it failed (check runs do not count)."""
    last = None
    for event in events.query(since=time.time() - STREAK_LOOKBACK, kinds=("sigupdate",)):
        if event.verdict in UPDATE_VERDICTS:
            last = event
    if last is None or last.verdict != "failed":
        return frozenset()
    return frozenset(last.reason.split())


def _subject(problems: Iterable[Problem]) -> str:
    """Problem keys for a subject line, the sources counted rather than listed."""
    keys = [problem.key for problem in problems]
    sources = sum(key.startswith("source:") for key in keys)
    named = [key for key in keys if not key.startswith("source:")]
    if sources:
        named.insert(1 if "freshclam" in named else 0, f"{sources} source(s)")
    return ", ".join(named)


def _alert_text(report: Report) -> str:
    texts = [problem.text for problem in report.problems]
    parts = [f"- {text}" for text in texts]
    others = [line for line in report.lines if line not in texts]
    if others:
        parts += ["", "The rest of this run:", *(f"  {line}" for line in others)]
    for problem in report.problems:
        if problem.detail:
            parts += ["", f"Output ({problem.key}):", problem.detail]
    parts += ["", "This alert is sent once per failing streak, and a notice when it ends;",
              "every run is an event (kind sigupdate). `sigupdate --check` shows the ages."]
    return "\n".join(parts) + "\n"


def _alert(config: Config, report: Report, previous: frozenset[str]) -> None:
    """Alert once per failing streak: when a problem appears, and once when all clear."""
    spool = Spool(config.spool_dir)
    new = [problem for problem in report.problems if problem.key not in previous]
    for problem in new:
        log.warning("%s", problem.text)
    if new:
        subject = f"signature update failing: {_subject(report.problems)}"
        alert_admin(config, spool, subject, _alert_text(report))
    elif previous and not report.problems:
        log.info("all clear again after: %s", ", ".join(sorted(previous)))
        text = "All clear: " + report.summary() + "\n"
        alert_admin(config, spool, "signature updates working again", text)


def update(config: Config, freshclam_timeout: float = FRESHCLAM_TIMEOUT) -> Report:
    """One sigupdate run: freshclam, extra sources, clamd reload, age check; event and alert."""
    with run_lock(config.var_dir / LOCK_NAME) as held:
        if not held:
            report = Report(SigOutcome.BUSY, ("another sigupdate is running; nothing done",))
            with EventLog(config.var_dir) as events:
                events.record(report.event())
            return report
        report = _update(config, freshclam_timeout)
        with EventLog(config.var_dir) as events:
            previous = _previous_problems(events)
            events.record(report.event())
            _alert(config, report, previous)
    return report


def check(config: Config) -> Report:
    """Report versions and ages only (for monitoring); stale is a problem, nothing alerts."""
    fresh = freshness(config)
    lines = [fresh.summary(), *(age.line(fresh.now) for age in fresh.files)]
    if config.scanner == "clamd":
        lines.append(clamd_state(config))
    problems = (Problem("stale", FAIL, fresh.summary()),) if fresh.is_stale else ()
    outcome = SigOutcome.STALE if fresh.is_stale else SigOutcome.FRESH
    report = Report(outcome, tuple(lines), problems)
    with EventLog(config.var_dir) as events:
        events.record(report.event())
    return report

