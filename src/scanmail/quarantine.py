"""Quarantine: the original spool file, its decoded parts and a readable record.

Layout, for a message SPOOL/quarantine/<qid> (the spool file, byte for byte):
  SPOOL/quarantine/<qid>.d/record   reason, viruses, names, envelope, time ("Key: value" lines)
  SPOOL/quarantine/<qid>.d/parts/   the decoded attachments (mode 0600, sanitized names)

The pass stores messages here; the admin lists, examines, releases (the spool file moves
to outgoing unchanged, the extras go), deletes and purges them. Every release and delete
is an event in the event database, with who did it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scanmail import durable
from scanmail.durable import fsync_dir
from scanmail.errors import GatewayError, MalformedSpoolFile, SpoolError
from scanmail.events import Event, EventLog
from scanmail.spool import Spool, fresh_name, is_complete, read_spool_file
from scanmail.untrusted import one_line
from scanmail.verdict import EventKind

RECORD = "record"
PARTS = "parts"


@dataclass(frozen=True)
class Record:
    """What the admin needs to know about one quarantined message."""

    qid: str
    reason: str
    time: float
    sender: str
    recipients: tuple[str, ...]
    size: int
    viruses: tuple[str, ...] = ()
    attachments: tuple[str, ...] = ()
    detail: str = ""
    message_id: str = ""
    subject: str = ""

    @property
    def what(self) -> str:
        """The virus names, else the banned attachment name, else the detail."""
        if self.viruses:
            return ", ".join(self.viruses)
        # a banned record's detail is "'name' matched file:line: pattern" (rules.Hit)
        named = (name for name in self.attachments if self.detail.startswith(repr(name)))
        return next(named, self.detail)

    def to_text(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(self.time))
        lines = [
            ("Spool-Id", self.qid), ("Quarantined", stamp), ("Time", f"{self.time:.3f}"),
            ("Reason", self.reason), ("Detail", self.detail),
            ("From", f"<{self.sender}>"),
            *[("To", f"<{rcpt}>") for rcpt in self.recipients],
            ("Message-Id", self.message_id), ("Subject", self.subject),
            ("Size", str(self.size)),
            *[("Virus", virus) for virus in self.viruses],
            *[("Attachment", name) for name in self.attachments],
            ("Release-With", f"scanmail quarantine release {self.qid}"),
        ]
        return "".join(f"{key}: {one_line(value, 2000)}\n" for key, value in lines if value)

    @classmethod
    def from_text(cls, text: str) -> Record:
        values: dict[str, list[str]] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                values.setdefault(key, []).append(value)

        def one(key: str) -> str:
            return values.get(key, [""])[0]

        return cls(
            qid=one("Spool-Id"), reason=one("Reason"), time=float(one("Time") or 0),
            sender=one("From").strip("<>"),
            recipients=tuple(v.strip("<>") for v in values.get("To", [])),
            size=int(one("Size") or 0), viruses=tuple(values.get("Virus", [])),
            attachments=tuple(values.get("Attachment", [])), detail=one("Detail"),
            message_id=one("Message-Id"), subject=one("Subject"),
        )


def extras_dir(spool: Spool, qid: str) -> Path:
    return spool.quarantine / f"{qid}.d"


def free_name(spool: Spool, qid: str) -> str:
    """qid, or a fresh name if a message of that name is already in quarantine.

    The pass alone puts messages into quarantine, under its run lock, so the name stays
    free until store() renames the message in (and that rename never replaces anyway).
    """
    name = qid
    for _ in range(100):
        if not os.path.lexists(spool.quarantine / name):
            return name
        name = fresh_name(qid)
    raise SpoolError(f"{spool.quarantine}: no free name for {qid}")


def store(spool: Spool, message: Path, record: Record, workdir: Path | None) -> Path:
    """Quarantine a message: record and decoded parts first, then the spool file itself.

    The message moves last, in one rename, so it is in exactly one folder whatever
    happens; extras left by a crash before that rename are replaced on the next try.
    A message of the same name already in quarantine is never overwritten: this one is
    stored under a fresh name (record.qid says which; see free_name()).
    """
    name = free_name(spool, record.qid)
    if name != record.qid:
        record = dataclasses.replace(record, qid=name)
    staging = spool.tmp / f"{record.qid}.q"
    final = extras_dir(spool, record.qid)
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        if workdir is not None and workdir.is_dir():
            os.rename(workdir, staging / PARTS)
        durable.write_text(staging / RECORD, record.to_text())
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_dir(spool.quarantine)
    except OSError as exc:
        raise SpoolError(f"{final}: cannot write quarantine record: {exc.strerror}") from exc
    return spool.place(message, "quarantine", name)


def read_record(spool: Spool, qid: str) -> Record:
    """The record of one quarantined message."""
    path = extras_dir(spool, qid) / RECORD
    try:
        return Record.from_text(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise GatewayError(f"{qid}: not in quarantine") from None


def list_ids(spool: Spool) -> list[str]:
    """Spool ids of the quarantined messages."""
    ids = []
    with contextlib.suppress(FileNotFoundError), os.scandir(spool.quarantine) as entries:
        for entry in entries:
            if entry.name.endswith((".d", ".q")) or entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                if is_complete(entry.stat(follow_symlinks=False).st_mode):
                    ids.append(entry.name)
    return sorted(ids)


def remove_orphans(spool: Spool) -> None:
    """Extras of a message that never reached quarantine (a crash before its move)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(spool.quarantine) as entries:
        for entry in entries:
            if entry.name.endswith(".d") and entry.is_dir(follow_symlinks=False):
                qid = entry.name[:-2]
                if not (spool.quarantine / qid).exists() and (spool.incoming / qid).exists():
                    shutil.rmtree(entry.path, ignore_errors=True)


# -- the admin's side: look, release, delete, purge ----------------------------------

_QID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class QuarantineError(GatewayError):
    """An admin's quarantine command was refused: unknown id, released twice, still infected."""


Vet = Callable[[Path], "str | None"]
"""Why a quarantined message must not go out (a virus, cannot be checked), or None."""


def message_path(spool: Spool, qid: str) -> Path:
    """Where a quarantined spool file lives; QuarantineError if qid is no spool id."""
    if not _QID.fullmatch(qid) or qid.endswith((".d", ".q")):
        raise QuarantineError(f"{qid!r} is not a spool id")
    return spool.quarantine / qid


def load_record(spool: Spool, qid: str) -> Record:
    """The record of a quarantined message, rebuilt from the spool file if it is missing."""
    path = message_path(spool, qid)
    try:
        return read_record(spool, qid)
    except (GatewayError, ValueError):  # missing, or mangled by hand (Time: not a number)
        pass
    st = path.stat()
    sender, size = "", st.st_size
    recipients: tuple[str, ...] = ()
    with contextlib.suppress(MalformedSpoolFile):
        spool_file = read_spool_file(path)
        sender, recipients = spool_file.envelope.sender, spool_file.envelope.recipients
        size = spool_file.message_size
    return Record(qid=qid, reason="unknown", time=st.st_mtime, sender=sender,
                  recipients=recipients, size=size, detail="no quarantine record")


def records(spool: Spool) -> list[Record]:
    """Every quarantined message's record, newest first."""
    found = []
    for qid in list_ids(spool):
        with contextlib.suppress(FileNotFoundError):  # released or deleted meanwhile
            found.append(load_record(spool, qid))
    return sorted(found, key=lambda record: (record.time, record.qid), reverse=True)


def quarantined(spool: Spool, qid: str, events: EventLog) -> Path:
    """The spool file of qid; QuarantineError saying where it went if it is not there."""
    path = message_path(spool, qid)
    if path.is_file():
        return path
    gone = [e for e in (events.last("release", qid), events.last("delete", qid)) if e]
    if gone:
        last = max(gone, key=lambda event: event.time)
        verb = "released" if last.kind == EventKind.RELEASE else "deleted"
        raise QuarantineError(f"{qid}: already {verb} {_stamp(last.time)} {last.detail}".rstrip())
    raise QuarantineError(f"{qid}: not in quarantine")


def release(
    spool: Spool, qid: str, events: EventLog, who: str, vet: Vet | None = None,
    force: bool = False,
) -> Path:
    """Move a quarantined spool file to outgoing, unchanged, and record who did it.

    With vet (a rescan), a message it objects to stays unless force. The file gets a fresh
    mtime, so the forwarder's retry lifetime starts at the release, not at its arrival.
    """
    path = quarantined(spool, qid, events)
    record = load_record(spool, qid)
    try:
        read_spool_file(path)
    except MalformedSpoolFile as exc:
        raise QuarantineError(f"{qid}: cannot be delivered, its envelope is unreadable: {exc}"
                              ) from None
    note = ""
    if vet is not None:
        finding = vet(path)
        if finding and not force:
            raise QuarantineError(f"{qid}: rescan: {finding}; kept (--force releases it)")
        note = f", forced past rescan: {finding}" if finding else ", rescanned clean"
    os.utime(path)
    target = spool.move(path, "outgoing")  # a fresh name if outgoing has one of this name
    events.record(_admin_event(EventKind.RELEASE, record, f"by {who}{note}"))
    _drop_extras(spool, qid)
    return target


def delete(spool: Spool, qid: str, events: EventLog, who: str, note: str = "") -> Record:
    """Delete a quarantined message and its extras, and record who did it."""
    path = quarantined(spool, qid, events)
    record = load_record(spool, qid)
    try:
        os.unlink(path)
        fsync_dir(spool.quarantine)
    except FileNotFoundError:
        raise QuarantineError(f"{qid}: not in quarantine (moved meanwhile)") from None
    except OSError as exc:
        raise SpoolError(f"{path}: cannot delete: {exc.strerror}") from exc
    events.record(_admin_event(EventKind.DELETE, record, f"by {who}{note}"))
    _drop_extras(spool, qid)
    return record


def expired(spool: Spool, cutoff: float) -> list[Record]:
    """Quarantined messages stored before cutoff (a time), oldest first."""
    return sorted((r for r in records(spool) if r.time < cutoff), key=lambda r: (r.time, r.qid))


def purge(spool: Spool, cutoff: float, events: EventLog, who: str) -> list[Record]:
    """Delete what was quarantined before cutoff, and extras left without a message."""
    note = f" (purge of mail quarantined before {_stamp(cutoff)})"
    gone = []
    for record in expired(spool, cutoff):
        try:
            gone.append(delete(spool, record.qid, events, who, note))
        except QuarantineError:
            continue  # released or deleted by someone else meanwhile
    _drop_stale_extras(spool, cutoff)
    return gone


def _admin_event(kind: EventKind, record: Record, detail: str) -> Event:
    return Event(
        kind=kind, qid=record.qid, message_id=record.message_id, sender=record.sender,
        recipients=record.recipients, size=record.size, reason=record.reason,
        viruses=record.viruses, detail=detail,
    )


def _drop_extras(spool: Spool, qid: str) -> None:
    shutil.rmtree(extras_dir(spool, qid), ignore_errors=True)


def _drop_stale_extras(spool: Spool, cutoff: float) -> None:
    """Extras whose message is gone (a crash mid-release); recent ones may be mid-store."""
    with contextlib.suppress(FileNotFoundError), os.scandir(spool.quarantine) as entries:
        for entry in entries:
            if not entry.name.endswith(".d") or not entry.is_dir(follow_symlinks=False):
                continue
            qid = entry.name[:-2]
            if (spool.quarantine / qid).exists():
                continue
            stored = 0.0
            with contextlib.suppress(GatewayError, ValueError):  # no record, or mangled
                stored = read_record(spool, qid).time
            with contextlib.suppress(OSError):
                if (stored or entry.stat().st_mtime) < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
