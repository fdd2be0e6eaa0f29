"""Where a decided message goes: outgoing (with the scanned header) or the quarantine.

Every move is crash-safe: a message is whole in exactly one folder whatever moment a
pass is killed at, and recover() finishes what a killed pass left half done.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from scanmail import mime, quarantine
from scanmail.durable import fsync_dir
from scanmail.errors import SpoolError
from scanmail.spool import (
    INCOMPLETE_MODE,
    Spool,
    SpoolFile,
    is_complete,
    iter_message,
    mark_complete,
)

HEADER_PEEK = 64 << 10
RECORD_NAMES = 1000  # attachment names a quarantine record lists (issue 14: bounded)
_FRESH = re.compile(r"(.+)-[0-9a-f]{8}")  # spool.fresh_name(): a copy renamed to stay apart
STALE_TMP_SECONDS = 86400  # no writer takes a day over one spool file


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


def to_outgoing(spool: Spool, spool_file: SpoolFile, scanned_header: str) -> Path:
    """Copy to outgoing, with the scanned header if given, still marked incomplete.

    The caller records the decision, then calls retire(): the copy is renamed in while
    incomplete (mode 0600, which the forwarder skips), the incoming file is unlinked, and
    only then is the copy marked complete: a crash at any point leaves one deliverable
    file (see recover()).
    """
    chunks: Iterator[bytes] = iter_message(spool_file)
    if scanned_header:
        chunks = _with_header(spool_file, scanned_header)
    return spool.write("outgoing", spool_file.envelope, chunks, qid=spool_file.qid,
                       complete=False)


def retire(spool_file: SpoolFile, target: Path) -> None:
    """Unlink the incoming file, then make its outgoing copy deliverable."""
    try:
        os.unlink(spool_file.path)
        fsync_dir(spool_file.path.parent)  # gone for good before the copy is deliverable
    except OSError as exc:
        raise SpoolError(f"{spool_file.path}: cannot remove: {exc.strerror}") from exc
    mark_complete(target, durable=False)  # if the mode is lost, recover() sets it again


def record_for(
    spool_file: SpoolFile, headers: Headers, explosion: mime.Explosion, reason: str,
    viruses: tuple[str, ...], detail: str, when: float,
) -> quarantine.Record:
    """The quarantine record of a decided message."""
    return quarantine.Record(
        qid=spool_file.qid, reason=reason, time=when,
        sender=spool_file.envelope.sender, recipients=spool_file.envelope.recipients,
        size=spool_file.message_size, viruses=viruses,
        attachments=tuple(explosion.names[:RECORD_NAMES]), detail=detail,
        message_id=headers.message_id, subject=headers.subject,
    )


def _with_header(spool_file: SpoolFile, header: str) -> Iterator[bytes]:
    """The message with one header line on top, in the message's own line ending."""
    chunks = iter_message(spool_file)
    first = next(chunks, b"")
    line_end = b"\r\n" if first.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    yield header.encode("ascii") + line_end + first
    yield from chunks


def fresh_dir(path: Path) -> None:
    """An empty private folder at path (a killed pass may have left one)."""
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(mode=0o700)
    except OSError as exc:  # a full disk (issue 14): exit 74, not a traceback
        raise SpoolError(f"{path}: cannot make work folder: {exc.strerror}") from exc


def _original_waits(spool: Spool, name: str, copied_ns: int) -> bool:
    """Is the incoming file an incomplete outgoing copy was made of still there?

    The copy has the original's name, or that name with a fresh tail if outgoing had the
    name already. An incoming file of that name written after the copy is a new message
    that came in again under the same name (the original was retired): not ours.
    """
    match = _FRESH.fullmatch(name)
    for original in (name, match.group(1) if match else None):
        if original is None:
            continue
        try:
            st = os.stat(spool.incoming / original, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_mtime_ns <= copied_ns:
            return True
    return False


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
                if _original_waits(spool, entry.name, st.st_mtime_ns):
                    os.unlink(entry.path)  # our own copy; the original is still in incoming
                else:
                    mark_complete(Path(entry.path))  # killed between unlink and mark
    quarantine.remove_orphans(spool)
