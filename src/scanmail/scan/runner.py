"""The scanning pass: Gateway.process_one() decides and moves one message; run() does them all.

One channel says "retry this message later": a Decision with Verdict.RETRY. Its reason
says whose fault it is: SCANNER_DOWN (the scanner gives no answer at all, or fails a
canary scan of the EICAR test string: the pass stops taking new messages) or SCAN_FAILED
(the scanner failed on this message only: the pass goes on, and after SCAN_FAILURES_MAX
passes the message is held as unchecked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from scanmail import mime, quarantine
from scanmail.config import Config
from scanmail.digest import Digest
from scanmail.errors import (
    GatewayError,
    MalformedSpoolFile,
    ScanFailed,
    ScannerUnavailable,
    SpoolError,
)
from scanmail.events import Event, EventLog, alert_if_set_aside
from scanmail.humanize import plural
from scanmail.scan import alerts, route
from scanmail.scan.decide import Decision, Judge
from scanmail.scan.inflight import POISON_TRIES, Inflight
from scanmail.scan.outage import Outage
from scanmail.scan.rules import Rules, load_rules
from scanmail.scan.scanner import Scanner, Target, TooLarge, make_scanner
from scanmail.spool import Spool, SpoolFile, list_complete, read_spool_file, run_lock
from scanmail.testing import eicar
from scanmail.untrusted import one_line
from scanmail.verdict import EventKind, Reason, Verdict

log = logging.getLogger(__name__)

LOCK_NAME = "scanmail.lock"
STORE_FAILING = "quarantine-failing"  # in SPOOL/var: qids whose store failed, alerted once
SCAN_FAILURES_MAX = 3  # passes a message may fail the scanner before it is held unchecked


@dataclass
class PassSummary:
    """What one pass over incoming did."""

    locked: bool = False
    seen: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    left: int = 0
    errors: int = 0  # messages that met a bug (logged with a traceback)
    scanner_error: str = ""  # the scanner is down: the pass stopped
    retry_note: str = ""  # the scanner failed on some message: it is retried next pass
    seconds: float = 0.0

    @property
    def delivered(self) -> int:
        return self.reasons[Reason.CLEAN.value]

    @property
    def quarantined(self) -> int:
        return sum(n for reason, n in self.reasons.items() if reason != Reason.CLEAN.value)

    @property
    def why_left(self) -> str:
        return self.scanner_error or self.retry_note or "see the log"

    def headline(self) -> str:
        """The one line a hand run shows on a terminal (the CLI decides when):
        "scanmail: 3 messages: 2 delivered, 1 quarantined (infected 1)"."""
        total = self.delivered + self.quarantined + self.left
        if not total:
            return "scanmail: 0 messages in incoming"
        parts = [f"{self.delivered} delivered"]
        if self.quarantined:
            why = ", ".join(f"{reason} {n}" for reason, n in sorted(self.reasons.items())
                            if reason != Reason.CLEAN.value)
            parts.append(f"{self.quarantined} quarantined ({why})")
        if self.left:
            parts.append(f"{self.left} left in incoming ({one_line(self.why_left, 120)})")
        return f"scanmail: {plural(total, 'message')}: " + ", ".join(parts)


class Gateway:
    """Everything one pass needs: settings, spool, rules, scanner, event log."""

    def __init__(self, config: Config, rules: Rules, scanner: Scanner, events: EventLog) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir)
        self.events = events
        self.judge = Judge(rules, scanner, mime.Limits(
            config.decode_max_bytes, config.decode_max_parts, config.decode_max_depth
        ), config.scan_policy, config.encrypted_archives, config.raw_scan)
        self.lock = threading.Lock()  # the event database and the outage mark
        self.outage = Outage(config, self.spool, events, self.lock)
        self.digest = Digest(config, self.spool)
        self.inflight = Inflight(config.var_dir)

    def process_one(self, path: Path) -> Decision:
        """Decide one incoming spool file and move it (or leave it, for a RETRY)."""
        started = time.monotonic()
        qid = path.name
        try:
            spool_file = read_spool_file(path)
        except MalformedSpoolFile as exc:
            return self.quarantine_malformed(path, str(exc), started)
        workdir = self.spool.tmp / f"{qid}_d"
        route.fresh_dir(workdir)
        try:
            try:
                earlier = self.inflight.begin(qid)
            except OSError as exc:
                raise SpoolError(f"{self.inflight.folder}: cannot mark {qid}: {exc.strerror}"
                                 ) from exc
            try:
                if earlier >= POISON_TRIES:  # it killed the pass it was in, twice (OOM?)
                    explosion, decision = mime.Explosion(), Decision(
                        Verdict.QUARANTINE, Reason.UNCHECKED,
                        detail=f"the scanning pass died {earlier} times while deciding it "
                               "(out of memory?)")
                else:
                    explosion, decision = self.decide(spool_file, workdir)
            finally:
                self.inflight.end(qid)
            if decision.verdict is Verdict.RETRY:
                self.record_retry(spool_file, decision, started)
                return decision
            headers = route.read_headers(spool_file, explosion.header)
            event = self.event_for(spool_file, headers, explosion, decision, started)
            if decision.verdict is Verdict.QUARANTINE:
                self.to_quarantine(spool_file, headers, explosion, decision, workdir, event)
            else:
                self.deliver(spool_file, event, decision.scanned)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return decision

    def decide(self, spool_file: SpoolFile, workdir: Path) -> tuple[mime.Explosion, Decision]:
        """The judge's decision, with the scanner's failures turned into RETRY decisions."""
        try:
            explosion, decision = self.judge.decide(spool_file, workdir)
        except ScannerUnavailable as exc:
            return mime.Explosion(), Decision(Verdict.RETRY, Reason.SCANNER_DOWN, detail=str(exc))
        except ScanFailed as exc:
            return mime.Explosion(), self.scan_failed(spool_file, exc)
        except GatewayError:
            raise
        except Exception as exc:
            # A bug met by this message: never pass it, never stop the pass for it.
            log.exception("qid=%s internal error while deciding", spool_file.qid)
            return mime.Explosion(), Decision(Verdict.QUARANTINE, Reason.UNCHECKED,
                                              detail=f"internal error: {exc!r}"[:300])
        if decision.scanned:
            self.outage.up()
        return explosion, decision

    def scan_failed(self, spool_file: SpoolFile, exc: ScanFailed) -> Decision:
        """The scanner failed on this message: retry it, or after a few tries hold it.

        If the scanner answers otherwise, the fault is the message's (it times out, or
        breaks the stream): after SCAN_FAILURES_MAX passes it is quarantined as unchecked
        rather than left to block the queue for ever.
        """
        down = self.canary()
        if down:  # then the scanner is the fault: the message stays, one outage alert
            return Decision(Verdict.RETRY, Reason.SCANNER_DOWN, detail=down[:300])
        with self.lock:
            earlier = self.events.count("retry", spool_file.qid, Reason.SCAN_FAILED.value)
        if earlier + 1 >= SCAN_FAILURES_MAX:
            return Decision(Verdict.QUARANTINE, Reason.UNCHECKED,
                            detail=f"scanner failed {earlier + 1} times: {exc}"[:300])
        return Decision(Verdict.RETRY, Reason.SCAN_FAILED, detail=str(exc))

    def canary(self) -> str:
        """'' if the scanner finds the EICAR test string now; else what is wrong with it.

        A scanner that answers VERSION but fails every scan is down, not the messages'
        fault (issue 14): its health is judged by a scan, of a sample it must detect.
        """
        folder = self.spool.tmp / f"canary{secrets.token_hex(4)}_d"  # recover() clears *_d
        try:
            folder.mkdir(mode=0o700)
            sample = folder / "eicar.com"
            sample.write_bytes(eicar())
            found = self.judge.scanner.scan(Target(sample), [], folder)
        except ScannerUnavailable as exc:
            return str(exc)
        except (ScanFailed, TooLarge, OSError) as exc:
            return f"the scanner fails a test scan: {exc}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not found.infected:
            return "the scanner does not detect the EICAR test string"
        return ""

    def event_for(
        self, spool_file: SpoolFile, headers: route.Headers, explosion: mime.Explosion,
        decision: Decision, started: float,
    ) -> Event:
        envelope = spool_file.envelope
        return Event(
            kind=EventKind.SCAN, qid=spool_file.qid, message_id=headers.message_id,
            sender=envelope.sender, recipients=envelope.recipients,
            size=spool_file.message_size, verdict=decision.verdict.value,
            reason=decision.reason.value, viruses=decision.viruses,
            attachments=tuple(explosion.names[:100]),
            scan_ms=int((time.monotonic() - started) * 1000), detail=decision.detail,
            received=received_at(spool_file.path),
        )

    # -- outcomes ---------------------------------------------------------------------
    def deliver(self, spool_file: SpoolFile, event: Event, scanned: bool) -> None:
        """To outgoing: the copy first, then the event, then the incoming file retired."""
        header = self.config.scanned_header if scanned else ""
        target = route.to_outgoing(self.spool, spool_file, header)
        with self.lock:
            self.events.record(event)
        route.retire(spool_file, target)

    def to_quarantine(
        self, spool_file: SpoolFile, headers: route.Headers, explosion: mime.Explosion,
        decision: Decision, workdir: Path, event: Event,
    ) -> None:
        """Alerts first (a crash may repeat them), then the record, then the message."""
        record = route.record_for(spool_file, headers, explosion, decision.reason.value,
                                  decision.viruses, decision.detail, event.time)
        # The name it will have in quarantine (a fresh one if that one is taken), for the alerts.
        record = dataclasses.replace(record, qid=quarantine.free_name(self.spool, record.qid))
        if not self.store_failing(spool_file.qid):  # its alerts went out on the first try
            alerts.alert_admin(self.digest, record)
            if (decision.reason is Reason.INFECTED and self.config.notify_sender
                    and spool_file.envelope.sender):
                alerts.notify_sender(self.config, self.spool, record)
        with self.lock:
            self.events.record(event)
        self.store(spool_file.qid, spool_file.path, record, workdir)

    def store_failing(self, qid: str) -> bool:
        """Did storing this message in quarantine fail on an earlier pass (same streak)?"""
        with self.lock:
            try:
                text = (self.config.var_dir / STORE_FAILING).read_text(errors="replace")
            except FileNotFoundError:
                return False
        return qid in text.split()

    def store(self, qid: str, path: Path, record: quarantine.Record,
              workdir: Path | None) -> None:
        """quarantine.store(), noting a failure so the next pass does not alert again.

        A quarantine that cannot be written fails the pass (exit 74) until it is fixed;
        the message's alerts go out once for that streak, not once per pass (issue 14).
        """
        mark = self.config.var_dir / STORE_FAILING
        try:
            quarantine.store(self.spool, path, record, workdir)
        except SpoolError:
            with self.lock, contextlib.suppress(OSError), open(mark, "a") as note:
                note.write(f"{qid}\n")
            raise
        if self.store_failing(qid):
            with self.lock, contextlib.suppress(OSError):
                kept = [q for q in mark.read_text(errors="replace").split() if q != qid]
                if kept:
                    mark.write_text("".join(f"{q}\n" for q in kept))
                else:
                    mark.unlink()

    def quarantine_malformed(self, path: Path, why: str, started: float) -> Decision:
        decision = Decision(Verdict.QUARANTINE, Reason.MALFORMED, detail=why)
        size = path.stat().st_size
        record = quarantine.Record(
            qid=quarantine.free_name(self.spool, path.name), reason=decision.reason.value,
            time=time.time(), sender="",
            recipients=(), size=size, detail=why,
        )
        if not self.store_failing(path.name):
            alerts.alert_admin(self.digest, record)
        event = Event(kind=EventKind.SCAN, qid=path.name, size=size, verdict=decision.verdict.value,
                      reason=decision.reason.value, detail=why,
                      scan_ms=int((time.monotonic() - started) * 1000))
        with self.lock:
            self.events.record(event)
        self.store(path.name, path, record, None)
        return decision

    def record_retry(self, spool_file: SpoolFile, decision: Decision, started: float) -> None:
        """The scanner gave no answer: the message stays; one alert per outage."""
        event = Event(
            kind=EventKind.RETRY, qid=spool_file.qid, sender=spool_file.envelope.sender,
            recipients=spool_file.envelope.recipients, size=spool_file.message_size,
            verdict=Verdict.RETRY.value, reason=decision.reason.value, detail=decision.detail,
            scan_ms=int((time.monotonic() - started) * 1000),
        )
        with self.lock:
            self.events.record(event)
        if decision.reason is Reason.SCANNER_DOWN:
            self.outage.down(decision.detail)


def received_at(path: Path) -> float:
    """When the receiver completed the file: its mtime (the gateway's delay starts there)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


Progress = Callable[[int], None]


def run(config: Config, progress_factory: Callable[[int], Progress] | None = None) -> PassSummary:
    """One pass over incoming, oldest first, SCAN_WORKERS messages at a time."""
    started = time.monotonic()
    spool = Spool(config.spool_dir)
    spool.check()
    rules = load_rules(config.etc_dir)
    summary = PassSummary()
    with run_lock(config.var_dir / LOCK_NAME) as held:
        if not held:
            summary.locked = True
            return summary
        route.recover(spool)
        paths = list_complete(spool.incoming)
        progress = progress_factory(len(paths)) if progress_factory else None
        with EventLog(config.var_dir) as events:
            alert_if_set_aside(config, spool)
            gateway = Gateway(config, rules, make_scanner(config), events)
            gateway.digest.flush()  # digests whose window passed while no mail came
            # Messages a dead pass was deciding go first, one at a time (see inflight).
            marked = gateway.inflight.marked()
            gateway.inflight.prune({path.name for path in paths})
            _run_all(gateway, [p for p in paths if p.name in marked], summary, progress, 1)
            _run_all(gateway, [p for p in paths if p.name not in marked], summary, progress)
            gateway.digest.flush()
    summary.seconds = time.monotonic() - started
    return summary


def _run_all(
    gateway: Gateway, paths: list[Path], summary: PassSummary, progress: Progress | None,
    workers: int = 0,
) -> None:
    workers = max(1, workers or gateway.config.scan_workers)
    pending: set[Future[Decision]] = set()
    queue = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        while True:
            while not summary.scanner_error and len(pending) < workers * 2:
                path = next(queue, None)
                if path is None:
                    break
                pending.add(pool.submit(gateway.process_one, path))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                summary.seen += 1
                if progress:
                    progress(1)
                try:
                    decision = future.result()
                except GatewayError:
                    raise  # the spool itself failed: stop the run
                except Exception:
                    log.exception("a message could not be processed; it stays in incoming")
                    summary.errors += 1
                    summary.left += 1
                    continue
                if decision.verdict is Verdict.RETRY:
                    summary.left += 1
                    if decision.reason is Reason.SCANNER_DOWN:  # stop taking new messages
                        summary.scanner_error = summary.scanner_error or decision.detail
                    else:  # this message only: go on with the others
                        summary.retry_note = summary.retry_note or decision.detail
                    continue
                summary.reasons[decision.reason.value] += 1
    summary.left += sum(1 for _ in queue)
