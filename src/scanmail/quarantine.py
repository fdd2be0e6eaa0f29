"""Quarantine: the original spool file, its decoded parts and a readable record; list, release.

Layout, for a message SPOOL/quarantine/<qid> (the spool file, byte for byte):
  SPOOL/quarantine/<qid>.d/record   reason, viruses, names, envelope, time ("Key: value" lines)
  SPOOL/quarantine/<qid>.d/parts/   the decoded attachments (mode 0600, sanitized names)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scanmail.errors import GatewayError, SpoolError
from scanmail.events import clean
from scanmail.spool import Spool, fsync_dir, is_complete

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
        return "".join(f"{key}: {clean(value, 2000)}\n" for key, value in lines if value)

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


def store(spool: Spool, message: Path, record: Record, workdir: Path | None) -> Path:
    """Quarantine a message: record and decoded parts first, then the spool file itself.

    The message moves last, in one rename, so it is in exactly one folder whatever
    happens; extras left by a crash before that rename are replaced on the next try.
    """
    staging = spool.tmp / f"{record.qid}.q"
    final = extras_dir(spool, record.qid)
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        if workdir is not None and workdir.is_dir():
            os.rename(workdir, staging / PARTS)
        _write_durably(staging / RECORD, record.to_text().encode("utf-8", "surrogateescape"))
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_dir(spool.quarantine)
    except OSError as exc:
        raise SpoolError(f"{final}: cannot write quarantine record: {exc.strerror}") from exc
    return spool.move(message, "quarantine")


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


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
