"""The forwarder: delivers complete spool files in outgoing to the internal mail server.

Each recipient the relay accepts is recorded as a SENT line appended to SPOOL/var/fwd/<qid>.sent
(fsynced, in room reserved before the transaction) before anything else happens, so a retry
never delivers twice (issues 3 and 14; see sentlog). Temporary failures are
retried with growing delays, kept in SPOOL/var/fwd/<qid>.json; permanent ones get an
RFC 3464 report to the sender and the file goes to failed/, never deleted.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scanmail import dsnparams
from scanmail.config import Config
from scanmail.durable import fsync_dir
from scanmail.errors import MalformedSpoolFile, SpoolError, TempFailure
from scanmail.events import Event, EventLog, alert_if_set_aside
from scanmail.fwd import bounce, transcript
from scanmail.fwd.report import PassReport
from scanmail.fwd.retry import STATE_FOLDER, RetryFolder, RetryState
from scanmail.fwd.sentlog import SentLog
from scanmail.fwd.transport import (
    Attempt,
    RelayDown,
    Reply,
    Transport,
    open_transport,
    relay_address,
)
from scanmail.hops import count_hops, loop_reply
from scanmail.humanize import plural
from scanmail.spool import (
    Envelope,
    Spool,
    SpoolFile,
    iter_message,
    list_complete,
    read_spool_file,
    run_lock,
)
from scanmail.untrusted import one_line
from scanmail.verdict import Delivery, EventKind

log = logging.getLogger(__name__)

LOCK_NAME = "fwd.lock"


class Forwarder:
    """Delivers the outgoing folder, one pass at a time."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.spool = Spool(config.spool_dir)
        self.retries = RetryFolder(self.spool.var / STATE_FOLDER, clock)
        self.sent = SentLog(self.spool.var / STATE_FOLDER)
        self.max_age = config.fwd_max_age_days * 86400.0
        self.unreadable: set[str] = set()  # alerted this run: one alert per file, not per pass

    # -- one pass ----------------------------------------------------------------------

    def run_pass(self, flush: bool = False, stop: threading.Event | None = None) -> PassReport:
        """Try every complete file in outgoing whose retry time has come (all, with flush).

        Setting stop (SIGTERM) ends the pass after the deliveries in progress.
        """
        report = PassReport()
        now = self.clock()
        files = list_complete(self.spool.outgoing)
        self.retries.prune({path.name for path in files})
        live = {path.name for path in files} | {p.name for p in list_complete(self.spool.incoming)}
        dsnparams.prune(self.spool.var, live, self.max_age + 86400)
        self.sent.prune({path.name for path in files})
        todo: queue.Queue[Path] = queue.Queue()
        for path in files:
            if flush or self.retries.load(path).next_try <= now:
                todo.put(path)
            else:
                report.waiting += 1
        workers = min(self.config.fwd_concurrency, todo.qsize())
        if not workers:
            return report
        with EventLog(self.config.var_dir) as events:  # one connection, shared by the workers
            if alert_if_set_aside(self.config, self.spool):
                report.queued += 1  # delivered by the extra pass of --once
            abort = stop or threading.Event()
            with ThreadPoolExecutor(workers, thread_name_prefix="fwd") as pool:
                futures = [
                    pool.submit(self._work, todo, events, report, abort) for _ in range(workers)
                ]
            for future in futures:
                future.result()  # re-raise a worker's run-level error (a spool write failed)
            if report.relay_down:
                self._expire_unreachable(todo, events, report)
        return report

    def _work(
        self,
        todo: queue.Queue[Path],
        events: EventLog,
        report: PassReport,
        abort: threading.Event,
    ) -> None:
        transport = open_transport(self.config)
        try:
            while not abort.is_set() and not report.relay_down:
                try:
                    path = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    self.forward(path, transport, events, report)
                except RelayDown as exc:
                    report.relay_down = str(exc)
                    todo.put(path)
        except BaseException:
            abort.set()  # a run-level error: the other workers stop too
            raise
        finally:
            transport.close()

    def forward(
        self, path: Path, transport: Transport, events: EventLog, report: PassReport
    ) -> None:
        """Deliver one spool file to its pending recipients and settle the outcome."""
        try:
            message = self.sent.merged(read_spool_file(path))
        except FileNotFoundError:
            return
        except PermissionError:
            self._unreadable(path, report)
            return
        except MalformedSpoolFile as exc:
            self._fail_malformed(path, str(exc), events, report)
            return
        state = self.retries.load(path)
        pending = [r for r in message.envelope.recipients if r not in state.failed]
        with message.open_message() as handle:
            hops = count_hops(handle)
        if hops > self.config.max_hops:
            # A loop (issue 12): never sent round again; failed with a report, kept in failed/.
            log.warning("qid=%s event=delivery verdict=failed reason=loop hops=%d",
                        message.qid, hops)
            attempt = Attempt().refuse(pending, Reply(554, loop_reply(hops, self.config.max_hops)))
        else:
            attempt = Attempt()
            if pending:
                self.sent.reserve(message, pending)  # no room: SpoolError before anything is sent
                attempt = transport.deliver(message, pending)
                self.sent.record(message, attempt.delivered)
        self.settle(message, state, attempt, transport.name, events, report)

    def _expire_unreachable(
        self, todo: queue.Queue[Path], events: EventLog, report: PassReport
    ) -> None:
        """With the relay down, messages past FWD_MAX_AGE_DAYS bounce; the rest just wait."""
        now = self.clock()
        while not todo.empty():
            path = todo.get_nowait()
            state = self.retries.load(path)
            if now - state.arrival < self.max_age:
                report.deferred += 1
                continue
            try:
                message = self.sent.merged(read_spool_file(path))
            except (OSError, MalformedSpoolFile):
                continue
            pending = [r for r in message.envelope.recipients if r not in state.failed]
            reply = Reply(451, f"4.4.1 relay unreachable: {report.relay_down}")
            attempt = Attempt(relay=relay_address(self.config)).refuse(pending, reply)
            self.settle(message, state, attempt, "", events, report)

    # -- outcomes ----------------------------------------------------------------------

    def settle(
        self,
        message: SpoolFile,
        state: RetryState,
        attempt: Attempt,
        remote: str,
        events: EventLog,
        report: PassReport,
    ) -> None:
        """Write back SENT lines, bounce, schedule a retry or finish; one event, one line."""
        now = self.clock()
        envelope = message.envelope
        deferred = dict(attempt.deferred)
        failed = dict(attempt.failed)
        if deferred and now - state.arrival >= self.max_age:
            for rcpt, reply in deferred.items():
                text = f"4.4.7 delivery time expired; last answer: {reply}"
                failed[rcpt] = Reply(reply.code, text)
            deferred = {}
        delivered = attempt.delivered
        path = message.path
        if delivered and attempt.accepted is not None and not attempt.dsn_passed:
            notice = bounce.send_relayed(self.config, self.spool, message, delivered,
                                         attempt.accepted, remote, state.arrival)
            if notice is not None:
                with report.lock:
                    report.queued += 1
        done = (*envelope.sent, *delivered)
        if done and not deferred and (failed or state.failed):
            # Off to failed/: the file itself then says who got it (the .sent log goes).
            remaining = tuple(r for r in envelope.recipients if r not in delivered)
            sent = Envelope(envelope.sender, remaining, tuple(dict.fromkeys(done)))
            path = self.spool.write("outgoing", sent, iter_message(message), qid=message.qid,
                                    replace=True)
        if failed:
            self._bounce(message, failed, remote, state.arrival, events, report)
            state.failed.update({rcpt: str(reply) for rcpt, reply in failed.items()})
        worst = next(iter({**failed, **deferred}.values()), None)
        if deferred:
            state.defer(now, str(worst))
            self.retries.save(message.qid, state)
            verdict = Delivery.DEFERRED
        elif state.failed:
            self._park(path, message, state, delivered, report)
            self.retries.drop(message.qid)
            dsnparams.drop(self.spool.var, message.qid)
            self.sent.drop(message.qid)
            verdict = Delivery.FAILED
        else:
            self._remove(path)
            self.retries.drop(message.qid)
            dsnparams.drop(self.spool.var, message.qid)
            self.sent.drop(message.qid)
            verdict = Delivery.DELIVERED
        report.count(verdict)
        # One line to follow the message into the relay's log (transcript): the relay,
        # its queue id, each recipient's reply and the data's.
        events.record(Event(
            kind=EventKind.DELIVERY, qid=message.qid, sender=envelope.sender,
            recipients=tuple(delivered) + tuple(failed) + tuple(deferred),
            size=message.message_size, verdict=verdict,
            reason="sent" if worst is None else str(worst.code),
            detail=transcript.account(attempt),
        ))

    def _bounce(
        self,
        message: SpoolFile,
        failed: dict[str, Reply],
        remote: str,
        arrival: float,
        events: EventLog,
        report: PassReport,
    ) -> None:
        """A delivery status notification to the sender (none to the null sender)."""
        target = bounce.send_dsn(self.config, self.spool, message, failed, remote, arrival)
        if target is None:
            return
        with report.lock:
            report.queued += 1
        events.record(Event(
            kind=EventKind.BOUNCE, qid=message.qid, sender=message.envelope.sender,
            recipients=tuple(failed), size=message.message_size, verdict=Delivery.DSN,
            reason=f"{len(failed)} failed", detail=f"dsn={target.name}",
        ))

    def _park(
        self,
        path: Path,
        message: SpoolFile,
        state: RetryState,
        delivered: Sequence[str],
        report: PassReport,
    ) -> None:
        """Move a finished file with failed recipients to failed/, say why, tell the admin."""
        lines = [f"{rcpt}: {reply}" for rcpt, reply in state.failed.items()]
        moved = bounce.park(self.spool, path, lines, self.clock())
        if not message.envelope.sender:
            # A bounce or one of our own notices: telling the admin could loop; the log says it.
            log.warning("qid=%s undeliverable notice from <> moved to failed/", message.qid)
            return
        bounce.alert_undeliverable(self.config, self.spool, message, moved, lines, delivered)
        with report.lock:
            report.queued += 1

    def _fail_malformed(
        self, path: Path, reason: str, events: EventLog, report: PassReport
    ) -> None:
        """A file in outgoing whose envelope cannot be read: park it and tell the admin."""
        moved = bounce.park(self.spool, path, [f"malformed spool file: {reason}"], self.clock())
        bounce.alert_malformed(self.config, self.spool, path.name, moved, reason)
        report.count("failed")
        events.record(Event(
            kind=EventKind.DELIVERY, qid=path.name, verdict=Delivery.FAILED, reason="malformed",
            detail=reason,
        ))

    def _unreadable(self, path: Path, report: PassReport) -> None:
        """A file this user cannot read (left by root): skipped, the admin told once a run."""
        report.count("deferred")
        with report.lock:
            if path.name in self.unreadable:
                return
            self.unreadable.add(path.name)
        log.error("%s: permission denied; skipped (chown it to the spool's owner)", path)
        bounce.alert_unreadable(self.config, self.spool, path)
        with report.lock:
            report.queued += 1

    def _remove(self, path: Path) -> None:
        """Every recipient accepted: the message now lives on the internal server."""
        try:
            path.unlink()
            fsync_dir(path.parent)
        except OSError as exc:
            raise SpoolError(f"{path}: cannot remove delivered file: {exc.strerror}") from exc


@contextlib.contextmanager
def _locked_forwarder(config: Config) -> Iterator[Forwarder | None]:
    """A Forwarder holding the stage's run lock; None if another scanmail-fwd holds it."""
    spool = Spool(config.spool_dir)
    spool.check()
    with run_lock(spool.var / LOCK_NAME) as locked:
        if not locked:
            log.info("another scanmail-fwd holds %s; nothing to do", spool.var / LOCK_NAME)
            yield None
        else:
            yield Forwarder(config)


def run_once(
    config: Config, flush: bool = False, stop: threading.Event | None = None
) -> PassReport:
    """One pass over outgoing (cron), and one more for the reports and alerts it wrote.

    Mail left for later is in the report, not raised: the caller shows the report, then
    check() turns it into exit 75.
    """
    stop = stop or threading.Event()
    with _locked_forwarder(config) as forwarder:
        if forwarder is None:
            return PassReport(locked=True)
        report = forwarder.run_pass(flush, stop)
        if report.queued and not report.relay_down and not stop.is_set():
            report.add(forwarder.run_pass(stop=stop))
        return report


def run(
    config: Config,
    once: bool = False,
    flush: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """Deliver outgoing once (cron; TempFailure if mail waits) or every FWD_INTERVAL until
    stop is set (daemon)."""
    if once:
        check(run_once(config, flush, stop))
        return
    stop = stop or threading.Event()
    with _locked_forwarder(config) as forwarder:
        if forwarder is None:
            return
        down = ""
        while not stop.is_set():
            report = forwarder.run_pass(flush, stop)
            flush = False
            if report.relay_down and not down:
                log.warning("relay down, mail waits in outgoing: %s", one_line(report.relay_down))
            elif down and not report.relay_down:
                log.warning("relay reachable again")
            down = report.relay_down
            stop.wait(0 if report.queued and not down else config.fwd_interval)


def check(report: PassReport) -> None:
    """Exit 75 (TempFailure) when mail was left for later."""
    if report.relay_down:
        raise TempFailure(
            f"relay unreachable ({one_line(report.relay_down)}); "
            f"{plural(report.deferred, 'message')} left in outgoing"
        )
    if report.deferred:
        raise TempFailure(f"{plural(report.deferred, 'message')} deferred by the relay, "
                          "left in outgoing")
