"""Event: one decision, as a log line and a row in the SQLite event database (SPOOL/var)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanmail import notify
from scanmail.config import Config
from scanmail.errors import SpoolError
from scanmail.spool import Spool
from scanmail.untrusted import MAX_TEXT, one_line, storable
from scanmail.verdict import EventKind

log = logging.getLogger(__name__)

DB_NAME = "events.sqlite"
DELIVERY_DETAIL_MAX = 3000  # fwd.transcript bounds each reply and lists at most 10 recipients
DAMAGED_MARK = "events-damaged"  # in SPOOL/var: a damaged database was set aside (issue 14)
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_damage(exc: sqlite3.Error) -> bool:
    """Does this error say the database file itself is damaged (not locked, not full)?"""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    return name.startswith(_DAMAGE) or "malformed" in text or "not a database" in text

# kind: what happened (verdict.EventKind). 'scan' rows are final decisions (one per spool
# id, replaced when a crashed run decides again); the other kinds accumulate.
KINDS = tuple(kind.value for kind in EventKind)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    qid TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    sender TEXT NOT NULL DEFAULT '',
    recipients TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    verdict TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    viruses TEXT NOT NULL DEFAULT '',
    attachments TEXT NOT NULL DEFAULT '',
    scan_ms INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    received REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS events_scan_qid ON events(qid) WHERE kind = 'scan';
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_kind_time ON events(kind, time);
CREATE INDEX IF NOT EXISTS report_verdict ON events(kind, verdict, time, size);
"""


def _retry_locked(statement: Callable[[], object], attempts: int = 50) -> None:
    """Run a statement, retrying for up to about 5 s while the database is locked."""
    for attempt in range(attempts):
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)

COLUMNS = (
    "time", "kind", "qid", "message_id", "sender", "recipients", "size",
    "verdict", "reason", "viruses", "attachments", "scan_ms", "detail", "received",
)
# Columns added since the first schema: (name, definition), added to older databases.
ADDED_COLUMNS = (
    # scan: when the receiver completed the message (its incoming file's mtime), so the
    # gateway's delay is a delivery's time minus its scan's received (issue 11).
    ("received", "REAL NOT NULL DEFAULT 0"),
)



@dataclass(frozen=True)
class Event:
    """One thing that happened to a message or to the gateway."""

    kind: str
    qid: str = ""
    message_id: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    size: int = 0
    verdict: str = ""
    reason: str = ""
    viruses: tuple[str, ...] = ()
    attachments: tuple[str, ...] = ()
    scan_ms: int = 0
    detail: str = ""
    time: float = field(default_factory=time.time)
    received: float = 0.0  # scan: the incoming file's mtime (the receiver's 250); 0 unknown

    def log_line(self) -> str:
        """The one syslog line: qid first, stable keys, sanitized values."""
        parts = [f"qid={self.qid or '-'}", f"event={self.kind}"]
        if self.kind in ("scan", "retry", "release", "delivery"):
            parts += [
                f"from=<{one_line(self.sender)}>",
                f"rcpts={len(self.recipients)}",
                f"size={self.size}",
            ]
        if self.verdict:
            parts.append(f"verdict={self.verdict}")
        reason = self.reason
        if self.viruses:
            reason += ":" + ",".join(self.viruses)
        if reason:
            parts.append(f"reason={one_line(reason)}")
        if self.kind == "scan":
            parts.append(f"ms={self.scan_ms}")
        if self.detail:
            # A delivery's detail is its transcript (fwd.transcript), bounded there: kept whole.
            limit = DELIVERY_DETAIL_MAX if self.kind == EventKind.DELIVERY else MAX_TEXT
            parts.append(f"detail={one_line(self.detail, limit)!r}")
        return " ".join(parts)

    def row(self) -> tuple[object, ...]:
        return tuple(
            storable(value) if isinstance(value, str) else value
            for value in (
                self.time, self.kind, self.qid, self.message_id, self.sender,
                "\n".join(self.recipients), self.size, self.verdict, self.reason,
                "\n".join(self.viruses), "\n".join(self.attachments), self.scan_ms, self.detail,
                self.received,
            )
        )

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Event:
        values = dict(zip(COLUMNS, row, strict=True))

        def split(key: str) -> tuple[str, ...]:
            text = str(values[key])
            return tuple(text.split("\n")) if text else ()

        return cls(
            kind=str(values["kind"]), qid=str(values["qid"]),
            message_id=str(values["message_id"]), sender=str(values["sender"]),
            recipients=split("recipients"), size=int(values["size"]),  # type: ignore[call-overload]
            verdict=str(values["verdict"]), reason=str(values["reason"]),
            viruses=split("viruses"), attachments=split("attachments"),
            scan_ms=int(values["scan_ms"]),  # type: ignore[call-overload]
            detail=str(values["detail"]), time=float(values["time"]),  # type: ignore[arg-type]
            received=float(values["received"]),  # type: ignore[arg-type]
        )


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring a database made by an older scanmail up to today's columns."""
    present = {str(row[1]) for row in db.execute("PRAGMA table_info(events)")}
    for name, definition in ADDED_COLUMNS:
        if name not in present:
            try:
                db.execute(f"ALTER TABLE events ADD COLUMN {name} {definition}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another program was first
                    raise


class EventLog:
    """The event database; each record() is also one INFO line in the system log."""

    def __init__(self, var_dir: Path) -> None:
        self.path = var_dir / DB_NAME
        self.lock = threading.Lock()  # one connection, shared by a pass's worker threads
        try:
            try:
                self._open()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                self._set_aside(exc)
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: cannot open event database: {exc}") from exc

    def _open(self) -> None:
        self.db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            # WAL: the receiver, scanner, forwarder and reports use the database at once.
            # Switching a new database to WAL takes a lock sqlite does not wait for, so
            # programs that start together retry briefly.
            _retry_locked(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            _add_columns(self.db)
        except BaseException:
            self.db.close()
            raise

    def _set_aside(self, damage: sqlite3.Error) -> None:
        """Rename a damaged database (and its -wal, -shm) aside and start a new one.

        Mail matters more than statistics (issue 14): a damaged database no longer stops
        scanning and forwarding. The move is noted in SPOOL/var/events-damaged, which the
        next pass or forwarder run turns into one alert (take_damage_note()). Under a lock
        file, and only if the database is still damaged once the lock is held, so two
        programs meeting the damage at once set it aside once.
        """
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        fd = os.open(self.path.with_name("events.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._open()
                row = self.db.execute("PRAGMA quick_check(1)").fetchone()
                if row and row[0] == "ok":
                    return  # set aside by another program meanwhile
                self.db.close()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{DB_NAME}.damaged-{stamp}-{os.getpid()}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
            with open(self.path.with_name(DAMAGED_MARK), "a", encoding="utf-8") as note:
                note.write(f"{aside.name} {one_line(str(damage))}\n")
            log.error("%s is damaged (%s): set aside as %s, a new one started",
                      self.path, one_line(str(damage)), aside.name)
            self._open()
        finally:
            os.close(fd)

    @classmethod
    def nowhere(cls) -> EventLog:
        """An in-memory event log, for decisions that must leave no trace (dry runs)."""
        log_ = cls.__new__(cls)
        log_.path = Path(":memory:")
        log_.lock = threading.Lock()
        log_.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        log_.db.executescript(SCHEMA)
        return log_

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, event: Event, quiet: bool = False) -> None:
        """Store the event (a 'scan' event replaces an earlier one for the same qid) and log it."""
        verb = "INSERT OR REPLACE" if event.kind == "scan" else "INSERT"
        marks = ",".join("?" * len(COLUMNS))
        sql = f"{verb} INTO events ({','.join(COLUMNS)}) VALUES ({marks})"
        try:
            with self.lock:
                try:
                    self.db.execute(sql, event.row())
                except sqlite3.DatabaseError as exc:
                    if not is_damage(exc) or self.path == Path(":memory:"):
                        raise
                    self._set_aside(exc)
                    self.db.execute(sql, event.row())
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: cannot record event: {exc}") from exc
        if not quiet:
            level = logging.WARNING if event.kind in ("retry", "outage") else logging.INFO
            log.log(level, "%s", event.log_line())

    def query(
        self, since: float = 0.0, until: float | None = None, kinds: Sequence[str] = ()
    ) -> Iterator[Event]:
        """Events in [since, until), oldest first, optionally of some kinds only."""
        sql = f"SELECT {','.join(COLUMNS)} FROM events WHERE time >= ?"
        args: list[object] = [since]
        if until is not None:
            sql += " AND time < ?"
            args.append(until)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        sql += " ORDER BY time, id"
        for row in self.db.execute(sql, args):
            yield Event.from_row(row)

    def count(self, kind: str, qid: str, reason: str) -> int:
        """How many events of a kind and reason one message has had."""
        with self.lock:
            row = self.db.execute(
                "SELECT COUNT(*) FROM events WHERE kind = ? AND qid = ? AND reason = ?",
                (kind, qid, reason),
            ).fetchone()
        return int(row[0])

    def last(self, kind: str, qid: str | None = None) -> Event | None:
        """The newest event of a kind (for one qid, if given)."""
        sql = f"SELECT {','.join(COLUMNS)} FROM events WHERE kind = ?"
        args: list[object] = [kind]
        if qid is not None:
            sql += " AND qid = ?"
            args.append(qid)
        row = self.db.execute(sql + " ORDER BY time DESC, id DESC LIMIT 1", args).fetchone()
        return Event.from_row(row) if row else None


def take_damage_note(var_dir: Path) -> str:
    """What was set aside since the last call ('' if nothing): for one alert, by one caller."""
    mark = var_dir / DAMAGED_MARK
    try:
        text = mark.read_text(encoding="utf-8", errors="replace")
        os.unlink(mark)  # only the caller whose unlink succeeds sends the alert
    except FileNotFoundError:
        return ""
    return text.strip()


def alert_if_set_aside(config: Config, spool: Spool) -> bool:
    """One alert for a damaged event database set aside (by this program or another)."""
    note = take_damage_note(config.var_dir)
    if note:
        notify.alert_admin(
            config, spool, "event database damaged: set aside, a new one started",
            f"The event database {config.var_dir / DB_NAME} was damaged:\n\n  {note}\n\n"
            "It was renamed aside (the name above) and a new, empty one started, so mail\n"
            "keeps flowing; the statistics and the history before now are in the old\n"
            "file, for sqlite3's .recover if you need them.\n",
        )
    return bool(note)
