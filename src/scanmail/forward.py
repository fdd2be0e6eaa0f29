"""The forwarder: delivers complete spool files in outgoing to the internal mail server.

Each recipient the relay accepts is written back as a SENT line (an atomic rewrite) before
anything else happens, so a retry never delivers twice (issue 3). Temporary failures are
retried with growing delays, kept in SPOOL/var/fwd/<qid>.json; permanent ones get an
RFC 3464 report to the sender and the file goes to failed/, never deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import smtplib
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from scanmail import notify
from scanmail.config import Config
from scanmail.dsn import Failure, build_dsn
from scanmail.errors import MalformedSpoolFile, SpoolError, TempFailure
from scanmail.events import Event, EventLog, clean
from scanmail.spool import (
    Envelope,
    Spool,
    SpoolFile,
    fsync_dir,
    iter_message,
    list_complete,
    read_spool_file,
    run_lock,
)

log = logging.getLogger(__name__)

RETRY_BASE = 60.0  # first retry after a minute, then 2, 4, 8 ... minutes
RETRY_MAX = 3600.0  # never wait more than an hour between tries
SEND_CHUNK = 64 << 10
STATE_FOLDER = "fwd"
LOCK_NAME = "fwd.lock"
# sendmail exit codes that are about the message, not the MTA (sysexits.h): a bounce.
# Everything else, EX_TEMPFAIL above all, is retried: a broken local MTA must not bounce mail.
SENDMAIL_PERMANENT = frozenset({65, 67, 68, 77})  # EX_DATAERR, EX_NOUSER, EX_NOHOST, EX_NOPERM


@dataclass(frozen=True)
class Reply:
    """An SMTP reply (or one made up for a local failure)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def is_ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_permanent(self) -> bool:
        """5xx; anything else that is not success (4xx, garbage, a lost line) is retried."""
        return 500 <= self.code < 600


@dataclass
class Attempt:
    """What the relay said about each recipient tried in one transaction."""

    delivered: list[str] = field(default_factory=list)
    deferred: dict[str, Reply] = field(default_factory=dict)
    failed: dict[str, Reply] = field(default_factory=dict)

    def refuse(self, recipients: Sequence[str], reply: Reply) -> Attempt:
        """Record the same non-success reply for several recipients."""
        target = self.failed if reply.is_permanent else self.deferred
        for rcpt in recipients:
            target[rcpt] = reply
        return self


class RelayDown(Exception):
    """The relay (or local MTA) cannot be reached at all: stop this pass, retry next time."""


class Transport(Protocol):
    """Delivers one message to some recipients; keeps its connection between calls."""

    name: str

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt: ...

    def close(self) -> None: ...


def is_8bit(message: SpoolFile) -> bool:
    """The message has bytes outside ASCII (needs BODY=8BITMIME)."""
    return any(not chunk.isascii() for chunk in iter_message(message))


def data_chunks(message: SpoolFile) -> Iterator[bytes]:
    """The message as SMTP DATA: CRLF line ends, dot-stuffed (RFC 5321 4.5.2), final dot."""
    out: list[bytes] = []
    size = 0
    with message.open_message() as handle:
        for raw in handle:
            line = raw if raw.endswith(b"\r\n") else raw.rstrip(b"\n") + b"\r\n"
            if line.startswith(b"."):
                line = b"." + line
            out.append(line)
            size += len(line)
            if size >= SEND_CHUNK:
                yield b"".join(out)
                out, size = [], 0
    out.append(b".\r\n")
    yield b"".join(out)


def _address(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")


class _StaleConnection(smtplib.SMTPServerDisconnected):
    """A reused connection was closed by the server before the transaction began."""


class SmtpTransport:
    """SMTP to RELAY_HOST:RELAY_PORT, one connection reused for several messages."""

    def __init__(self, config: Config) -> None:
        self.host = config.relay_host
        self.port = config.relay_port
        self.helo = config.hostname
        self.timeout = config.smtp_timeout
        self.name = self.host
        self.smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(local_hostname=self.helo, timeout=self.timeout)
        try:
            code, text = smtp.connect(self.host, self.port)
            if code != 220:
                raise RelayDown(f"{self.host}:{self.port} greets with {code} {text!r}")
            code, text = smtp.ehlo()
            if code != 250:
                code, text = smtp.helo()
                if code != 250:
                    raise RelayDown(f"{self.host}:{self.port} refuses HELO: {code}")
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            raise RelayDown(f"{self.host}:{self.port}: {exc}") from exc
        except RelayDown:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        """QUIT politely if the connection is still there."""
        if self.smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.smtp.quit()
            self.smtp.close()
            self.smtp = None

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt:
        """One transaction; a stale reused connection is replaced once, transparently."""
        for _ in range(2):
            reused = self.smtp is not None
            if self.smtp is None:
                self.smtp = self._connect()
            try:
                return self._transaction(self.smtp, message, recipients)
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                if not (reused and isinstance(exc, _StaleConnection)):
                    return Attempt().refuse(recipients, Reply(451, f"4.4.2 connection lost: {exc}"))
        raise AssertionError("unreachable")

    def _command(self, smtp: smtplib.SMTP, line: bytes) -> Reply:
        smtp.send(line + b"\r\n")
        code, text = smtp.getreply()
        return Reply(code, text.decode("utf-8", "replace").replace("\n", " "))

    def _transaction(self, smtp: smtplib.SMTP, message: SpoolFile, rcpts: Sequence[str]) -> Attempt:
        sender = message.envelope.sender
        attempt = Attempt()
        eight_bit = is_8bit(message)
        utf8 = not all(a.isascii() for a in (sender, *rcpts))
        params = b""
        if smtp.has_extn("size"):
            params += b" SIZE=%d" % message.message_size
        if eight_bit and smtp.has_extn("8bitmime"):
            params += b" BODY=8BITMIME"
        if (utf8 or eight_bit) and smtp.has_extn("smtputf8"):
            params += b" SMTPUTF8"
        elif utf8:
            return attempt.refuse(rcpts, Reply(553, "5.6.7 The relay does not support SMTPUTF8"))
        try:
            reply = self._command(smtp, b"MAIL FROM:<" + _address(sender) + b">" + params)
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnection(str(exc)) from exc
        if not reply.is_ok:
            return self._abort(smtp, attempt.refuse(rcpts, reply), reply)
        accepted: list[str] = []
        for rcpt in rcpts:
            reply = self._command(smtp, b"RCPT TO:<" + _address(rcpt) + b">")
            if reply.is_ok:
                accepted.append(rcpt)
            else:
                attempt.refuse([rcpt], reply)
        if not accepted:
            return self._abort(smtp, attempt, reply)
        reply = self._command(smtp, b"DATA")
        if reply.code != 354:
            return self._abort(smtp, attempt.refuse(accepted, reply), reply)
        for chunk in data_chunks(message):
            smtp.send(chunk)
        code, text = smtp.getreply()
        reply = Reply(code, text.decode("utf-8", "replace").replace("\n", " "))
        if reply.is_ok:
            attempt.delivered = accepted
        else:
            attempt.refuse(accepted, reply)
        if reply.code == 421:
            self._drop()
        return attempt

    def _abort(self, smtp: smtplib.SMTP, attempt: Attempt, reply: Reply) -> Attempt:
        """End a failed transaction with RSET, or drop the connection if that fails."""
        if reply.code == 421:
            self._drop()
            return attempt
        try:
            if not self._command(smtp, b"RSET").is_ok:
                self._drop()
        except (OSError, smtplib.SMTPException):
            self._drop()
        return attempt


class SendmailTransport:
    """Hands each message to a local MTA, as smtpfwdd did: sendmail -i -f FROM -- RCPTS."""

    def __init__(self, config: Config) -> None:
        self.command = config.fwd_sendmail
        self.timeout = config.smtp_timeout
        self.name = "localhost"

    def close(self) -> None:
        pass

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt:
        """Run the command; its exit status decides for every recipient at once."""
        argv = [*self.command, "-i", "-f", message.envelope.sender or "<>", "--", *recipients]
        with tempfile.TemporaryFile() as errors:
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
                )
            except OSError as exc:
                raise RelayDown(f"{self.command[0]}: {exc.strerror}") from exc
            assert process.stdin is not None
            try:
                with message.open_message() as handle, process.stdin:
                    for line in handle:  # the local MTA wants local (LF) line ends
                        process.stdin.write(line[:-2] + b"\n" if line.endswith(b"\r\n") else line)
            except BrokenPipeError:
                pass
            try:
                status = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                reply = Reply(451, f"4.4.2 {self.command[0]} timed out")
                return Attempt().refuse(recipients, reply)
            errors.seek(0)
            said = errors.read(400).decode("utf-8", "replace").strip().splitlines()
        text = f"{self.command[0]} exited with {status}" + (f": {said[0]}" if said else "")
        if status == 0:
            return Attempt(delivered=list(recipients))
        if status in SENDMAIL_PERMANENT:
            return Attempt().refuse(recipients, Reply(550, f"5.0.0 {text}"))
        return Attempt().refuse(recipients, Reply(451, f"4.0.0 {text}"))


@dataclass
class RetryState:
    """What the forwarder remembers about a message between tries."""

    arrival: float
    attempts: int = 0
    next_try: float = 0.0
    last_reply: str = ""
    failed: dict[str, str] = field(default_factory=dict)  # recipient -> the reply that bounced it


@dataclass
class PassReport:
    """The outcome of one pass over outgoing."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    waiting: int = 0
    queued: int = 0  # reports and alerts this pass wrote into outgoing
    relay_down: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, verdict: str) -> None:
        with self.lock:
            setattr(self, verdict, getattr(self, verdict) + 1)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the n-th temporary failure: doubling, capped at an hour."""
    return float(min(RETRY_BASE * 2 ** max(attempts - 1, 0), RETRY_MAX))


class Forwarder:
    """Delivers the outgoing folder, one pass at a time."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.spool = Spool(config.spool_dir)
        self.state_dir = self.spool.var / STATE_FOLDER
        self.max_age = config.fwd_max_age_days * 86400.0

    def transport(self) -> Transport:
        if self.config.fwd_sendmail:
            return SendmailTransport(self.config)
        return SmtpTransport(self.config)

    # -- retry state -------------------------------------------------------------------

    def state_path(self, qid: str) -> Path:
        return self.state_dir / f"{qid}.json"

    def load_state(self, path: Path) -> RetryState:
        """The message's retry state; a fresh one (arrival = the file's mtime) if none."""
        try:
            data = json.loads(self.state_path(path.name).read_text())
            return RetryState(
                arrival=float(data["arrival"]), attempts=int(data["attempts"]),
                next_try=float(data["next_try"]), last_reply=str(data["last_reply"]),
                failed={str(k): str(v) for k, v in dict(data["failed"]).items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            try:
                arrival = path.stat().st_mtime
            except OSError:
                arrival = self.clock()
            return RetryState(arrival=arrival)

    def save_state(self, qid: str, state: RetryState) -> None:
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        target = self.state_path(qid)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "w") as out:
            json.dump(asdict(state), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)

    def drop_state(self, qid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path(qid).unlink()

    def prune_states(self, present: set[str]) -> None:
        """Forget messages no longer in outgoing (delivered by another tool, or removed)."""
        if not self.state_dir.is_dir():
            return
        for path in self.state_dir.glob("*.json"):
            if path.stem not in present:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- one pass ----------------------------------------------------------------------

    def run_pass(self, flush: bool = False, stop: threading.Event | None = None) -> PassReport:
        """Try every complete file in outgoing whose retry time has come (all, with flush).

        Setting stop (SIGTERM) ends the pass after the deliveries in progress.
        """
        report = PassReport()
        now = self.clock()
        files = list_complete(self.spool.outgoing)
        self.prune_states({path.name for path in files})
        todo: queue.Queue[Path] = queue.Queue()
        for path in files:
            if flush or self.load_state(path).next_try <= now:
                todo.put(path)
            else:
                report.waiting += 1
        workers = min(self.config.fwd_concurrency, todo.qsize())
        if not workers:
            return report
        with EventLog(self.config.var_dir) as events:  # one connection, shared by the workers
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
        transport = self.transport()
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
            message = read_spool_file(path)
        except FileNotFoundError:
            return
        except MalformedSpoolFile as exc:
            self._fail_malformed(path, str(exc), events, report)
            return
        state = self.load_state(path)
        pending = [r for r in message.envelope.recipients if r not in state.failed]
        attempt = transport.deliver(message, pending) if pending else Attempt()
        self.settle(message, state, attempt, transport.name, events, report)

    def _expire_unreachable(
        self, todo: queue.Queue[Path], events: EventLog, report: PassReport
    ) -> None:
        """With the relay down, messages past FWD_MAX_AGE_DAYS bounce; the rest just wait."""
        now = self.clock()
        while not todo.empty():
            path = todo.get_nowait()
            state = self.load_state(path)
            if now - state.arrival < self.max_age:
                report.deferred += 1
                continue
            try:
                message = read_spool_file(path)
            except (OSError, MalformedSpoolFile):
                continue
            pending = [r for r in message.envelope.recipients if r not in state.failed]
            reply = Reply(451, f"4.4.1 relay unreachable: {report.relay_down}")
            self.settle(message, state, Attempt().refuse(pending, reply), "", events, report)

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
        if delivered and (deferred or failed or state.failed):
            # Progress first, atomically: a crash from here on never delivers these twice.
            remaining = tuple(r for r in envelope.recipients if r not in delivered)
            sent = Envelope(envelope.sender, remaining, (*envelope.sent, *delivered))
            path = self.spool.write("outgoing", sent, iter_message(message), qid=message.qid)
        if failed:
            self._bounce(message, failed, remote, state.arrival, events, report)
            state.failed.update({rcpt: str(reply) for rcpt, reply in failed.items()})
        worst = next(iter({**failed, **deferred}.values()), None)
        if deferred:
            state.attempts += 1
            state.next_try = now + retry_delay(state.attempts)
            state.last_reply = str(worst)
            self.save_state(message.qid, state)
            verdict = "deferred"
        elif state.failed:
            self._park(path, message, state, delivered, events, report)
            self.drop_state(message.qid)
            verdict = "failed"
        else:
            self._remove(path)
            self.drop_state(message.qid)
            verdict = "delivered"
        report.count(verdict)
        details = [f"{rcpt}: {reply}" for rcpt, reply in {**failed, **deferred}.items()]
        events.record(Event(
            kind="delivery", qid=message.qid, sender=envelope.sender,
            recipients=tuple(delivered) + tuple(failed) + tuple(deferred),
            size=message.message_size, verdict=verdict,
            reason="sent" if worst is None else str(worst.code),
            detail=f"sent={len(delivered)} " + "; ".join(details),
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
        """A delivery status notification to the sender; never to the null sender."""
        sender = message.envelope.sender
        if not sender:
            return
        failures = [Failure(rcpt, str(reply), remote) for rcpt, reply in failed.items()]
        with message.open_message() as handle:
            head = handle.read(64 << 10)
        dsn = build_dsn(
            self.config.hostname, self.config.alert_from, sender, message.qid, failures, head,
            arrival=arrival,
        )
        target = self.spool.write("outgoing", Envelope("", (sender,)), [dsn])
        with report.lock:
            report.queued += 1
        events.record(Event(
            kind="bounce", qid=message.qid, sender=sender, recipients=tuple(failed),
            size=message.message_size, verdict="dsn", reason=f"{len(failures)} failed",
            detail=f"dsn={target.name}",
        ))

    def _park(
        self,
        path: Path,
        message: SpoolFile,
        state: RetryState,
        delivered: Sequence[str],
        events: EventLog,
        report: PassReport,
    ) -> None:
        """Move a finished file with failed recipients to failed/, say why, tell the admin."""
        moved = self.spool.move(path, "failed")
        lines = [f"{rcpt}: {reply}" for rcpt, reply in state.failed.items()]
        self._write_reason(moved, lines)
        sender = message.envelope.sender
        if not sender:
            # A bounce or one of our own notices: telling the admin could loop; the log says it.
            log.warning("qid=%s undeliverable notice from <> moved to failed/", message.qid)
            return
        text = "\n".join([
            f"The message {message.qid} from <{sender}> could not be delivered to:",
            "",
            *(f"  {clean(line, 400)}" for line in lines),
            "",
            f"Delivered to: {', '.join(delivered) or '(none in the last attempt)'}",
            "The sender was sent a delivery status notification.",
            f"The message is kept in {moved}; move it back to outgoing to retry",
            "the failed recipients (those already delivered are marked SENT).",
        ])
        notify.alert_admin(self.config, self.spool, f"undeliverable message {message.qid}", text)
        with report.lock:
            report.queued += 1

    def _fail_malformed(
        self, path: Path, reason: str, events: EventLog, report: PassReport
    ) -> None:
        """A file in outgoing whose envelope cannot be read: park it and tell the admin."""
        moved = self.spool.move(path, "failed")
        self._write_reason(moved, [f"malformed spool file: {reason}"])
        notify.alert_admin(
            self.config, self.spool, f"malformed spool file {path.name}",
            f"{path.name} in outgoing has no readable envelope ({reason}).\n"
            f"It was moved to {moved} and not delivered.",
        )
        report.count("failed")
        events.record(Event(
            kind="delivery", qid=path.name, verdict="failed", reason="malformed", detail=reason,
        ))

    def _write_reason(self, parked: Path, lines: Sequence[str]) -> None:
        """failed/<qid>.reason: plain text beside the file (mode 0640: not a spool file)."""
        target = parked.with_name(parked.name + ".reason")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(self.clock()))
        try:
            target.write_text(f"{stamp}\n" + "".join(f"{line}\n" for line in lines))
            os.chmod(target, 0o640)
        except OSError as exc:
            raise SpoolError(f"{target}: cannot write: {exc.strerror}") from exc

    def _remove(self, path: Path) -> None:
        """Every recipient accepted: the message now lives on the internal server."""
        try:
            path.unlink()
            fsync_dir(path.parent)
        except OSError as exc:
            raise SpoolError(f"{path}: cannot remove delivered file: {exc.strerror}") from exc


def run(
    config: Config,
    once: bool = False,
    flush: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """Deliver outgoing once (cron) or every FWD_INTERVAL until stop is set (daemon)."""
    spool = Spool(config.spool_dir)
    spool.check()
    stop = stop or threading.Event()
    with run_lock(spool.var / LOCK_NAME) as locked:
        if not locked:
            log.info("another scanmail-fwd holds %s; nothing to do", spool.var / LOCK_NAME)
            return
        forwarder = Forwarder(config)
        if once:
            report = forwarder.run_pass(flush, stop)
            if report.queued and not report.relay_down and not stop.is_set():
                extra = forwarder.run_pass(stop=stop)  # the reports and alerts just written
                report.deferred += extra.deferred
                report.relay_down = extra.relay_down
            _check(report)
            return
        down = ""
        while not stop.is_set():
            report = forwarder.run_pass(flush, stop)
            flush = False
            if report.relay_down and not down:
                log.warning("relay down, mail waits in outgoing: %s", clean(report.relay_down))
            elif down and not report.relay_down:
                log.warning("relay reachable again")
            down = report.relay_down
            stop.wait(0 if report.queued and not down else config.fwd_interval)


def _check(report: PassReport) -> None:
    """Exit 75 (TempFailure) when mail was left for later."""
    if report.relay_down:
        raise TempFailure(
            f"relay unreachable ({clean(report.relay_down)}); "
            f"{report.deferred} message(s) left in outgoing"
        )
    if report.deferred:
        raise TempFailure(f"{report.deferred} message(s) deferred by the relay, left in outgoing")
