"""The scanning pass: process_one() decides one incoming message; run() does them all."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from scanmail import mime, notify, quarantine
from scanmail.config import Config
from scanmail.errors import (
    GatewayError,
    MalformedSpoolFile,
    ScanFailed,
    ScannerUnavailable,
    SpoolError,
)
from scanmail.events import Event, EventLog, clean
from scanmail.rules import Reason, Rules, Verdict, load_rules
from scanmail.scanner import Scanner, Target, TooLarge, make_scanner
from scanmail.spool import (
    INCOMPLETE_MODE,
    Envelope,
    Spool,
    SpoolFile,
    fsync_dir,
    is_complete,
    iter_message,
    list_complete,
    mark_complete,
    read_spool_file,
    run_lock,
)

log = logging.getLogger(__name__)

LOCK_NAME = "scanmail.lock"
OUTAGE_MARK = "scanner-down"
HEADER_PEEK = 64 << 10
SCAN_FAILURES_MAX = 3  # passes a message may fail the scanner before it is held unchecked
STALE_TMP_SECONDS = 86400  # no writer takes a day over one spool file


@dataclass(frozen=True)
class Decision:
    """What was decided for one message, and why."""

    verdict: Verdict
    reason: Reason
    viruses: tuple[str, ...] = ()
    detail: str = ""
    scanned: bool = False


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

    def describe(self) -> str:
        parts = [f"{self.seen} messages", f"{self.delivered} delivered"]
        parts += [f"{n} {reason}" for reason, n in sorted(self.reasons.items())
                  if reason != Reason.CLEAN.value]
        if self.left:
            parts.append(f"{self.left} left in incoming ({self.why_left})")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


@dataclass(frozen=True)
class Headers:
    """The few top-level headers the log and the alerts show."""

    message_id: str = ""
    subject: str = ""
    from_: str = ""


def read_headers(spool_file: SpoolFile, header: bytes = b"") -> Headers:
    """Message-ID, Subject and From: from the walk's header block, or the first 64 KB."""
    head = header
    if not head:
        with spool_file.open_message() as handle:
            head = handle.read(HEADER_PEEK)
        ends = (head.find(b"\n\n"), head.find(b"\r\n\r\n"))
        end = min((i for i in ends if i >= 0), default=-1)
        if end >= 0:
            head = head[: end + 2]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)

    def get(name: str) -> str:
        value = parsed.get(name, "")
        return " ".join(str(value).split())[:300]

    return Headers(get("Message-ID"), get("Subject"), get("From"))


class Gateway:
    """Everything one pass needs: settings, spool, rules, scanner, event log."""

    def __init__(self, config: Config, rules: Rules, scanner: Scanner, events: EventLog) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir)
        self.rules = rules
        self.scanner = scanner
        self.events = events
        self.limits = mime.Limits(
            config.decode_max_bytes, config.decode_max_parts, config.decode_max_depth
        )
        self.lock = threading.Lock()  # the event database and the outage mark

    # -- one message ------------------------------------------------------------------
    def process_one(self, path: Path) -> Decision:
        """Decide one incoming spool file and move it; raise ScannerUnavailable to retry."""
        started = time.monotonic()
        qid = path.name
        try:
            spool_file = read_spool_file(path)
        except MalformedSpoolFile as exc:
            return self.quarantine_malformed(path, str(exc), started)
        workdir = self.spool.tmp / f"{qid}_d"
        _fresh_dir(workdir)
        try:
            try:
                explosion, decision = self.decide(spool_file, workdir)
            except ScanFailed as exc:
                explosion, decision = mime.Explosion(), self.scan_failed(spool_file, exc)
                if decision.verdict is Verdict.RETRY:
                    self.record_retry(spool_file, str(exc), started, Reason.SCAN_FAILED)
                    return decision
            except GatewayError:
                raise
            except Exception as exc:
                # A bug met by this message: never pass it, never stop the pass for it.
                log.exception("qid=%s internal error while deciding", qid)
                explosion = mime.Explosion()
                decision = Decision(Verdict.QUARANTINE, Reason.UNCHECKED,
                                    detail=f"internal error: {exc!r}"[:300])
            headers = read_headers(spool_file, explosion.header)
            event = self.event_for(spool_file, headers, explosion, decision, started)
            if decision.verdict is Verdict.QUARANTINE:
                self.to_quarantine(spool_file, headers, explosion, decision, workdir, event)
            else:
                self.deliver(spool_file, event, decision.scanned)
        except ScannerUnavailable as exc:
            self.record_retry(spool_file, str(exc), started)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return decision

    def scan_failed(self, spool_file: SpoolFile, exc: ScanFailed) -> Decision:
        """The scanner failed on this message: retry it, or after a few tries hold it.

        If the scanner answers otherwise, the fault is the message's (it times out, or
        breaks the stream): after SCAN_FAILURES_MAX passes it is quarantined as unchecked
        rather than left to block the queue for ever.
        """
        self.scanner.version()  # raises ScannerUnavailable: then the scanner is the fault
        with self.lock:
            earlier = self.events.count("retry", spool_file.qid, Reason.SCAN_FAILED.value)
        if earlier + 1 >= SCAN_FAILURES_MAX:
            return Decision(Verdict.QUARANTINE, Reason.UNCHECKED,
                            detail=f"scanner failed {earlier + 1} times: {exc}"[:300])
        return Decision(Verdict.RETRY, Reason.SCAN_FAILED, detail=str(exc))

    def decide(self, spool_file: SpoolFile, workdir: Path) -> tuple[mime.Explosion, Decision]:
        """DESIGN.md policy, steps 2 to 7."""
        explosion = mime.Explosion()
        try:
            with spool_file.open_message() as handle:
                explosion = mime.Walker(workdir, self.limits).walk(handle)
        except mime.LimitExceeded as exc:
            return explosion, Decision(Verdict.QUARANTINE, Reason.UNCHECKED, detail=str(exc))
        except OSError as exc:  # the disk, not the message: leave it for the next pass
            raise SpoolError(f"{workdir}: cannot decode into: {exc.strerror}") from exc
        except Exception as exc:  # noqa: BLE001
            # Hostile input that breaks the decoder cannot be judged: never pass it.
            log.warning("qid=%s decoder failed: %r", spool_file.qid, exc)
            return explosion, Decision(
                Verdict.QUARANTINE, Reason.UNCHECKED, detail=f"cannot decode: {exc!r}"[:300]
            )
        names = explosion.names
        banned = self.rules.banned(names)
        if banned is not None:
            return explosion, Decision(Verdict.QUARANTINE, Reason.BANNED, detail=banned.describe())
        suspect = self.rules.suspect(names)
        if self.config.scan_policy == "suspect" and suspect is None:
            return explosion, Decision(Verdict.DELIVER, Reason.CLEAN, detail="not suspect")
        message = Target(spool_file.path, spool_file.body_offset)
        parts = [p.path for p in explosion.parts if p.path is not None and p.size > 0]
        try:
            result = self.scanner.scan(message, parts, workdir)
        except TooLarge as exc:
            return explosion, Decision(Verdict.QUARANTINE, Reason.UNCHECKED, detail=str(exc))
        self.scanner_is_up()
        if result.infected:
            return explosion, Decision(
                Verdict.QUARANTINE, Reason.INFECTED, result.viruses, scanned=True
            )
        detail = suspect.describe() if suspect is not None else ""
        return explosion, Decision(Verdict.DELIVER, Reason.CLEAN, detail=detail, scanned=True)

    def event_for(
        self, spool_file: SpoolFile, headers: Headers, explosion: mime.Explosion,
        decision: Decision, started: float,
    ) -> Event:
        envelope = spool_file.envelope
        return Event(
            kind="scan", qid=spool_file.qid, message_id=headers.message_id,
            sender=envelope.sender, recipients=envelope.recipients,
            size=spool_file.message_size, verdict=decision.verdict.value,
            reason=decision.reason.value, viruses=decision.viruses,
            attachments=tuple(explosion.names[:100]),
            scan_ms=int((time.monotonic() - started) * 1000), detail=decision.detail,
        )

    # -- outcomes ---------------------------------------------------------------------
    def deliver(self, spool_file: SpoolFile, event: Event, scanned: bool) -> None:
        """Copy to outgoing with the scanned header, then retire the incoming file.

        The outgoing copy is renamed in while still incomplete (mode 0600, which the
        forwarder skips), the incoming file is unlinked, and only then is the copy marked
        complete: a crash at any point leaves one deliverable file (see recover()).
        """
        chunks: list[bytes] | Iterator[bytes] = iter_message(spool_file)
        if self.config.scanned_header and scanned:
            chunks = _with_header(spool_file, self.config.scanned_header)
        target = self.spool.write(
            "outgoing", spool_file.envelope, chunks, qid=spool_file.qid, complete=False
        )
        with self.lock:
            self.events.record(event)
        try:
            os.unlink(spool_file.path)
            fsync_dir(spool_file.path.parent)  # gone for good before the copy is deliverable
        except OSError as exc:
            raise SpoolError(f"{spool_file.path}: cannot remove: {exc.strerror}") from exc
        mark_complete(target, durable=False)  # if the mode is lost, recover() sets it again

    def to_quarantine(
        self, spool_file: SpoolFile, headers: Headers, explosion: mime.Explosion,
        decision: Decision, workdir: Path, event: Event,
    ) -> None:
        """Alerts first (a crash may repeat them), then the record, then the message."""
        record = quarantine.Record(
            qid=spool_file.qid, reason=decision.reason.value, time=event.time,
            sender=spool_file.envelope.sender, recipients=spool_file.envelope.recipients,
            size=spool_file.message_size, viruses=decision.viruses,
            attachments=tuple(explosion.names), detail=decision.detail,
            message_id=headers.message_id, subject=headers.subject,
        )
        notify.alert_admin(self.config, self.spool, *_alert_text(record))
        if (decision.reason is Reason.INFECTED and self.config.notify_sender
                and spool_file.envelope.sender):
            self.notify_sender(record)
        with self.lock:
            self.events.record(event)
        quarantine.store(self.spool, spool_file.path, record, workdir)

    def notify_sender(self, record: quarantine.Record) -> None:
        text = (
            "A message you sent could not be delivered because it carries a virus.\n\n"
            f"  To:       {clean(', '.join(record.recipients), 1000)}\n"
            f"  Subject:  {clean(record.subject, 300)}\n"
            f"  Virus:    {clean(', '.join(record.viruses), 300)}\n\n"
            "Your computer may be infected: please check it with an up-to-date virus\n"
            "scanner. The message has been kept by the mail administrator.\n"
        )
        msg = notify.build_message(
            self.config, [record.sender], "Virus found in a message you sent", text
        )
        notify.enqueue(self.spool, msg, [record.sender])

    def quarantine_malformed(self, path: Path, why: str, started: float) -> Decision:
        decision = Decision(Verdict.QUARANTINE, Reason.MALFORMED, detail=why)
        size = path.stat().st_size
        record = quarantine.Record(
            qid=path.name, reason=decision.reason.value, time=time.time(), sender="",
            recipients=(), size=size, detail=why,
        )
        notify.alert_admin(self.config, self.spool, *_alert_text(record))
        event = Event(kind="scan", qid=path.name, size=size, verdict=decision.verdict.value,
                      reason=decision.reason.value, detail=why,
                      scan_ms=int((time.monotonic() - started) * 1000))
        with self.lock:
            self.events.record(event)
        quarantine.store(self.spool, path, record, None)
        return decision

    # -- the scanner's health ---------------------------------------------------------
    def record_retry(
        self, spool_file: SpoolFile, why: str, started: float,
        reason: Reason = Reason.SCANNER_DOWN,
    ) -> None:
        """The scanner gave no answer: the message stays; one alert per outage."""
        event = Event(
            kind="retry", qid=spool_file.qid, sender=spool_file.envelope.sender,
            recipients=spool_file.envelope.recipients, size=spool_file.message_size,
            verdict=Verdict.RETRY.value, reason=reason.value, detail=why,
            scan_ms=int((time.monotonic() - started) * 1000),
        )
        mark = self.config.var_dir / OUTAGE_MARK
        with self.lock:
            self.events.record(event)
            if reason is not Reason.SCANNER_DOWN or mark.exists():
                return
            mark.write_text(f"{time.time():.0f} {why}\n")
            self.events.record(Event(kind="outage", reason="down", detail=why))
        notify.alert_admin(
            self.config, self.spool, "virus scanner unavailable: mail is held",
            f"The virus scanner did not answer:\n\n  {why}\n\n"
            "Incoming mail stays in the spool, unscanned and undelivered, and is retried\n"
            "on every pass. You get this alert once per outage.\n",
        )

    def scanner_is_up(self) -> None:
        mark = self.config.var_dir / OUTAGE_MARK
        if not mark.exists():
            return
        with self.lock:
            if not mark.exists():
                return
            mark.unlink()
            self.events.record(Event(kind="outage", reason="up"))
        notify.alert_admin(
            self.config, self.spool, "virus scanner is back",
            "The virus scanner answers again; held mail is being scanned.\n",
        )


def _alert_text(record: quarantine.Record) -> tuple[str, str]:
    """Subject and body of the admin alert; every value from the message on one clean line."""
    def one(value: str, limit: int = 300) -> str:
        return clean(value, limit)

    what = ", ".join(record.viruses) if record.viruses else record.reason
    subject = one(f"{record.reason}: {what} from <{record.sender}>", 200)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.time))
    lines = [
        f"Time:        {stamp}",
        f"Spool file:  {record.qid}",
        f"From:        <{one(record.sender)}>",
        f"To:          {one(', '.join(f'<{r}>' for r in record.recipients), 1000)}",
        f"Subject:     {one(record.subject)}",
        f"Reason:      {record.reason}",
    ]
    if record.viruses:
        lines.append(f"Virus:       {one(', '.join(record.viruses))}")
    if record.detail:
        lines.append(f"Detail:      {one(record.detail, 500)}")
    if record.attachments:
        lines.append(f"Attachments: {one(', '.join(record.attachments[:20]), 1000)}")
    lines += [
        "",
        f"The message is kept in quarantine as {record.qid}.",
        f"To look at it:  scanmail quarantine show {record.qid}",
        f"To release it:  scanmail quarantine release {record.qid}",
    ]
    return subject, "\n".join(lines) + "\n"


def _with_header(spool_file: SpoolFile, header: str) -> Iterator[bytes]:
    """The message with one header line on top, in the message's own line ending."""
    chunks = iter_message(spool_file)
    first = next(chunks, b"")
    line_end = b"\r\n" if first.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    yield header.encode("ascii") + line_end + first
    yield from chunks


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700)


def recover(spool: Spool) -> None:
    """Finish what a killed pass left half done (call with the run lock held)."""
    stale = time.time() - STALE_TMP_SECONDS
    with contextlib.suppress(FileNotFoundError), os.scandir(spool.tmp) as entries:
        for entry in entries:
            if entry.name.endswith(("_d", ".q")) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < stale:
                # A writer killed mid-write (never acknowledged: the sender retried).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError), os.scandir(spool.outgoing) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # taken by the forwarder meanwhile
                st = entry.stat(follow_symlinks=False)
                if is_complete(st.st_mode) or st.st_mode & 0o777 != INCOMPLETE_MODE:
                    continue
                if (spool.incoming / entry.name).exists():
                    os.unlink(entry.path)  # our own copy; the original is still in incoming
                else:
                    mark_complete(Path(entry.path))  # killed between unlink and mark
    quarantine.remove_orphans(spool)


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
        recover(spool)
        paths = list_complete(spool.incoming)
        progress = progress_factory(len(paths)) if progress_factory else None
        with EventLog(config.var_dir) as events:
            gateway = Gateway(config, rules, make_scanner(config), events)
            _run_all(gateway, paths, summary, progress)
    summary.seconds = time.monotonic() - started
    return summary


def _run_all(
    gateway: Gateway, paths: list[Path], summary: PassSummary, progress: Progress | None
) -> None:
    workers = max(1, gateway.config.scan_workers)
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
                except ScannerUnavailable as exc:
                    summary.scanner_error = summary.scanner_error or str(exc)
                    summary.left += 1
                    continue
                except GatewayError:
                    raise  # the spool itself failed: stop the run
                except Exception:
                    log.exception("a message could not be processed; it stays in incoming")
                    summary.errors += 1
                    summary.left += 1
                    continue
                if decision.verdict is Verdict.RETRY:  # this message only: go on with others
                    summary.left += 1
                    summary.retry_note = summary.retry_note or decision.detail
                    continue
                summary.reasons[decision.reason.value] += 1
    summary.left += sum(1 for _ in queue)


@dataclass(frozen=True)
class Inspection:
    """A decision made without moving anything: for `scanmail check` and dry runs."""

    path: Path
    decision: Decision
    names: tuple[str, ...]
    defects: tuple[str, ...]


def _as_spool_file(path: Path) -> SpoolFile:
    """A spool file, or a plain RFC 5322 message (.eml) read with an empty envelope."""
    try:
        return read_spool_file(path)
    except MalformedSpoolFile:
        with open(path, "rb") as handle:
            head = handle.read(5)
        if head.startswith((b"FROM ", b"RCPT ", b"SENT ")):
            raise
        size = path.stat().st_size
        return SpoolFile(path, Envelope("", ()), 0, size)


class Inspector:
    """Decides files one by one with the pass's rules and scanner, moving nothing."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules = load_rules(config.etc_dir)
        self.scanner = make_scanner(config)

    def inspect(self, path: Path) -> Inspection:
        try:
            spool_file = _as_spool_file(path)
        except MalformedSpoolFile as exc:
            decision = Decision(Verdict.QUARANTINE, Reason.MALFORMED, detail=str(exc))
            return Inspection(path, decision, (), ())
        except OSError as exc:
            raise SpoolError(f"{path}: cannot read: {exc.strerror}") from exc
        with tempfile.TemporaryDirectory(prefix="scanmail-check-") as tmp:
            workdir = Path(tmp) / f"{path.name}_d"
            workdir.mkdir(mode=0o700)
            with EventLog.nowhere() as events:
                gateway = Gateway(self.config, self.rules, self.scanner, events)
                explosion, decision = gateway.decide(spool_file, workdir)
        return Inspection(path, decision, tuple(explosion.names), tuple(explosion.defects))
