"""The gateway's state at a glance, for `scanmail status` and monitoring scripts."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from scanmail import clamd_limits, delay, hostname, quarantine
from scanmail.admin.selfrelay import relay_to_self
from scanmail.config import Config
from scanmail.errors import ExitCode, ScannerUnavailable
from scanmail.events import DB_NAME, Event, EventLog
from scanmail.humanize import duration, moment, plural
from scanmail.scan import LOCK_NAME, OUTAGE_MARK, make_scanner
from scanmail.sigupdate import freshness
from scanmail.spool import MESSAGE_FOLDERS, Spool, list_complete
from scanmail.verdict import Delivery

DAY = 86400.0
# clamd's VERSION reply: "ClamAV 1.0.7/27300/Mon May 13 08:36:45 2024" (the daily build time)
_VERSION_DATE = re.compile(r"/\d+/\w{3} (\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})\s*$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class FolderState:
    """How many complete spool files a folder holds, and since when the oldest waits."""

    name: str
    count: int
    oldest: float | None  # mtime of the oldest file


@dataclass(frozen=True)
class ScannerState:
    """Whether the scanner answers, and how old its signatures are."""

    version: str
    error: str
    signatures: float | None  # build (or file) time of the newest signatures
    source: str  # where that time comes from


@dataclass(frozen=True)
class PassState:
    """When scanmail last ran a pass, and its last decision."""

    started: float | None  # the run lock's mtime: every pass rewrites it
    decision: Event | None
    outage: str  # the scanner-down mark's text, if the pipeline holds mail


@dataclass(frozen=True)
class Status:
    """Everything `scanmail status` shows, and what needs the admin's attention."""

    now: float
    folders: tuple[FolderState, ...]
    scanner: ScannerState
    last_pass: PassState
    deferred: tuple[Event, ...]  # the forwarder's latest deferral per file in outgoing
    max_wait: float  # seconds mail may wait in incoming or outgoing, or between passes
    sig_max_age: float  # seconds: SIG_MAX_AGE_DAYS
    config_problems: tuple[str, ...] = ()  # the relay is the receiver itself, a bad HOSTNAME
    mail_delay: delay.Delay | None = None  # today's gateway delay, 250 to delivery (issue 11)
    relay: str = ""  # why the internal server does not answer ("" when it does)
    limits: tuple[str, ...] = ()  # clamd limits below MAX_MESSAGE_SIZE

    @property
    def problems(self) -> list[str]:
        """What needs the admin: a silent scanner, stale signatures, mail waiting too long."""
        return [*self.config_problems, *self.scanner_problems(), *self.waiting_problems(),
                *self.delivery_problems(), *self.limits]

    def delivery_problems(self) -> Iterator[str]:
        if self.relay:
            yield f"internal server does not answer, mail waits in outgoing: {self.relay}"
        failed = next((f for f in self.folders if f.name == "failed"), None)
        if failed is not None and failed.count:
            yield (f"failed: {plural(failed.count, 'message')} could not be delivered "
                   "(reasons in failed/<id>.reason; move a file back to outgoing to retry)")

    def scanner_problems(self) -> Iterator[str]:
        scanner = self.scanner
        if scanner.error:
            yield f"scanner does not answer, incoming mail is held: {scanner.error}"
        elif scanner.signatures is None:
            yield "signature age unknown: no date from the scanner, no database in SIG_DB_DIR"
        elif self.now - scanner.signatures > self.sig_max_age:
            yield (f"signatures are {duration(self.now - scanner.signatures)} old "
                   f"(SIG_MAX_AGE_DAYS={self.sig_max_age / DAY:g}): is sigupdate running?")

    def waiting_problems(self) -> Iterator[str]:
        for folder in self.folders:
            waited = self.now - folder.oldest if folder.oldest is not None else 0.0
            if folder.name == "incoming" and waited > self.max_wait:
                yield f"incoming: a message has waited {duration(waited)} to be scanned"
            if folder.name == "outgoing" and waited > self.max_wait:
                yield (f"outgoing: a message has waited {duration(waited)} to be forwarded "
                       "(is the relay up? is scanmail-fwd running?)")
        started = self.last_pass.started
        if started is None:
            yield "no scanning pass has run yet (is scanmail.service running?)"
        elif self.now - started > self.max_wait:
            yield f"no scanning pass for {duration(self.now - started)} (is scanmail running?)"

    @property
    def exit_code(self) -> ExitCode:
        """0 all well; 75 the scanner does not answer (mail is held); 1 anything else."""
        if self.scanner.error:
            return ExitCode.TEMPFAIL
        return ExitCode.FAILURE if self.problems else ExitCode.OK

    def lines(self) -> list[str]:
        """The report, one fact per line, problems last and marked with '!'."""
        out = [self.folder_line(folder) for folder in self.folders]
        out.append(f"{'scanner':<12} {self.scanner_text()}")
        out.append(f"{'last pass':<12} {self.pass_text()}")
        if self.mail_delay is not None:
            out.append(f"{'mail delay':<12} today {self.mail_delay.describe()}")
        problems = self.problems
        out += [f"! {problem}" for problem in problems]
        verb = "needs" if len(problems) == 1 else "need"
        out.append(f"status: {len(problems)} {verb} attention" if problems else "status: ok")
        return out

    def folder_line(self, folder: FolderState) -> str:
        line = f"{folder.name:<12} {folder.count:>6}"
        if folder.oldest is not None:
            line += f"   oldest {duration(self.now - folder.oldest)}"
        if folder.name == "outgoing" and self.deferred:
            latest = max(self.deferred, key=lambda event: event.time)
            line += f"   {len(self.deferred)} deferred, last: {latest.detail[:80]}"
        return line

    def scanner_text(self) -> str:
        if self.scanner.error:
            return f"NOT ANSWERING: {self.scanner.error}"
        text = self.scanner.version
        if self.scanner.signatures is not None:
            age = duration(self.now - self.scanner.signatures)
            text += f"; signatures {age} old ({self.scanner.source})"
        return text

    def pass_text(self) -> str:
        state = self.last_pass
        if state.started is None:
            return "never"
        text = f"{duration(self.now - state.started)} ago"
        if state.decision is not None:
            event = state.decision
            text += (f"; last decision {duration(self.now - event.time)} ago: "
                     f"{event.qid} {event.verdict} {event.reason}")
        if state.outage:
            text += f"; {outage_text(state.outage, self.now)}"
        return text


def outage_text(mark: str, now: float) -> str:
    """The outage mark ("<epoch> <why>") as `scanner outage since 2026-12-01 22:49 (3 min)`."""
    first, _, why = mark.partition(" ")
    try:
        began = float(first)
    except ValueError:
        return f"scanner outage: {mark}"
    text = f"scanner outage since {moment(began)} ({duration(max(0.0, now - began))})"
    return f"{text}: {why.strip()}" if why.strip() else text


RELAY_PROBE_TIMEOUT = 5.0


def relay_state(config: Config) -> str:
    """'' when the internal server accepts a connection; else why not (one line).

    Asked only while outgoing holds mail: that is when its silence keeps mail back.
    """
    if config.fwd_sendmail:
        return ""  # a local MTA takes the mail: nothing to probe
    where = f"{config.relay_host}:{config.relay_port}"
    try:
        sock = socket.create_connection((config.relay_host, config.relay_port),
                                        timeout=RELAY_PROBE_TIMEOUT)
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    with sock, contextlib.suppress(OSError), sock.makefile("rb") as replies:
        # A polite probe: the greeting, then QUIT and its reply, so the server closes the
        # session itself (no "lost connection" in its log). Connected is answer enough.
        replies.readline(1024)
        sock.sendall(b"QUIT\r\n")
        replies.readline(1024)
    return ""


def gather(config: Config, max_wait: float, now: float | None = None) -> Status:
    """Look at the spool, the scanner and the event database; judge what needs attention."""
    now = time.time() if now is None else now
    spool = Spool(config.spool_dir)
    spool.check()
    folders = tuple(folder_state(spool, name) for name in MESSAGE_FOLDERS)
    scanner = scanner_state(config)
    with _events(config) as events:
        last_pass = pass_state(config, events)
        deferred = tuple(deferrals(spool, events))
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0,
                                                       microsecond=0).timestamp()
        today = delay.measure(events.db, midnight, now + 1) if events is not None else None
    setup = tuple(p for p in (relay_to_self(config), hostname.warning(config.hostname)) if p)
    return Status(now, folders, scanner, last_pass, deferred, max_wait,
                  config.sig_max_age_days * DAY, setup, today,
                  relay_state(config) if _count(folders, "outgoing") else "",
                  tuple(clamd_limits.warnings(config)))


def _count(folders: tuple[FolderState, ...], name: str) -> int:
    return sum(folder.count for folder in folders if folder.name == name)


def folder_state(spool: Spool, name: str) -> FolderState:
    """Count and oldest mtime of the complete spool files in one folder."""
    if name == "quarantine":
        paths = [spool.quarantine / qid for qid in quarantine.list_ids(spool)]
    else:
        paths = list_complete(spool.folder(name))
    times = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            times.append(path.stat().st_mtime)
    return FolderState(name, len(times), min(times, default=None))


def scanner_state(config: Config) -> ScannerState:
    """Ask the scanner for its version; date the signatures by it, else as sigupdate does."""
    try:
        version = make_scanner(config).version()
    except ScannerUnavailable as exc:
        return ScannerState("", str(exc), None, "")
    built = version_date(version)
    if built is not None:
        return ScannerState(version, "", built, "clamd")
    newest = freshness(config).newest
    if newest is None:
        return ScannerState(version, "", None, "")
    return ScannerState(version, "", newest.made, f"{newest.origin} of {newest.name}")


def version_date(version: str) -> float | None:
    """The database build time in clamd's VERSION reply, if it gives one."""
    match = _VERSION_DATE.search(version)
    if match is None or match.group(1) not in _MONTHS:
        return None
    month = _MONTHS.index(match.group(1)) + 1
    day, hour, minute, second, year = (int(match.group(i)) for i in (2, 3, 4, 5, 6))
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def pass_state(config: Config, events: EventLog | None) -> PassState:
    """The last pass (the run lock's mtime), the last decision and any scanner outage."""
    started = None
    with contextlib.suppress(FileNotFoundError):
        started = (config.var_dir / LOCK_NAME).stat().st_mtime
    outage = ""
    with contextlib.suppress(FileNotFoundError):
        outage = (config.var_dir / OUTAGE_MARK).read_text().strip()[:200] or "yes"
    decision = events.last("scan") if events is not None else None
    return PassState(started, decision, outage)


def deferrals(spool: Spool, events: EventLog | None) -> Iterator[Event]:
    """For each file waiting in outgoing, the forwarder's latest deferral, if any."""
    if events is None:
        return
    for path in list_complete(spool.outgoing):
        event = events.last("delivery", path.name)
        if event is not None and event.verdict == Delivery.DEFERRED:
            yield event


@contextlib.contextmanager
def _events(config: Config) -> Iterator[EventLog | None]:
    """The event database if it exists: status never creates it (it may run as root)."""
    if not (config.var_dir / DB_NAME).exists():
        yield None
        return
    with EventLog(config.var_dir) as events:
        yield events
