"""Delivered recipients, one appended line each: SPOOL/var/fwd/<qid>.sent (issue 14).

Before, each recipient the relay accepted was recorded by rewriting the whole spool file
(a 2 MB file fsynced for a 40-byte fact): a SIGKILL during that rewrite, or a full disk,
lost the fact and the next try delivered to those recipients again. Now the forwarder
appends "SENT <addr>" lines to a small file beside the retry state and fsyncs it, right
after the relay's 250: the window in which a crash can repeat a delivery is the one SMTP
itself has (between the 250 and our fsync of a few bytes).

A full disk cannot make that append fail: before a transaction, reserve() allocates
(posix_fallocate) room for every recipient it may add, and the lines are written into
that room. If the room cannot be had, nothing is delivered (the run stops with exit 74).

The first line names the spool file it belongs to (inode, mtime): a log left by a crash
after the message was finished never applies to a later message of the same name.
A spool reader takes the union of the file's own SENT lines and these.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

from scanmail.errors import SpoolError
from scanmail.spool import Envelope, SpoolFile

SUFFIX = ".sent"
SLACK = 512


def identity(path: Path) -> bytes:
    st = os.stat(path, follow_symlinks=False)
    return f"FILE {st.st_ino} {st.st_mtime_ns}\n".encode()


class SentLog:
    """The .sent files of the messages in outgoing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, qid: str) -> Path:
        return self.folder / f"{qid}{SUFFIX}"

    def read(self, message: SpoolFile) -> tuple[str, ...]:
        """The recipients recorded as delivered for this spool file."""
        try:
            with open(self.path(message.qid), "rb") as handle:
                data = handle.read(16 << 20)
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise SpoolError(f"{self.path(message.qid)}: cannot read: {exc.strerror}") from exc
        data = data.split(b"\0", 1)[0]
        lines = data.split(b"\n")[:-1]  # a last line without its newline was cut by a crash
        try:
            if not lines or lines[0] + b"\n" != identity(message.path):
                return ()
        except FileNotFoundError:
            return ()
        found = []
        for line in lines[1:]:
            if line.startswith(b"SENT <") and line.endswith(b">"):
                found.append(line[6:-1].decode("utf-8", "surrogateescape"))
        return tuple(dict.fromkeys(found))

    def merged(self, message: SpoolFile) -> SpoolFile:
        """message with the logged recipients moved from RCPT to SENT."""
        done = self.read(message)
        if not done:
            return message
        envelope = message.envelope
        envelope = Envelope(
            envelope.sender, tuple(r for r in envelope.recipients if r not in done),
            tuple(dict.fromkeys((*envelope.sent, *done))),
        )
        return replace(message, envelope=envelope)

    def reserve(self, message: SpoolFile, recipients: list[str]) -> None:
        """Make room for recording every one of recipients; SpoolError if there is none."""
        path = self.path(message.qid)
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                used = _used(fd)
                head = identity(message.path)
                if used == 0 or os.pread(fd, len(head), 0) != head:
                    os.ftruncate(fd, 0)  # none yet, or a stale one of an earlier message
                    os.pwrite(fd, head, 0)
                    used = len(head)
                need = sum(len(os.fsencode(r)) + 9 for r in recipients) + SLACK
                os.posix_fallocate(fd, used, need)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(
                f"{path}: no room to record deliveries, nothing sent: {exc.strerror}"
            ) from exc

    def record(self, message: SpoolFile, delivered: list[str]) -> None:
        """Append the recipients the relay accepted, durably, into the reserved room."""
        if not delivered:
            return
        path = self.path(message.qid)
        lines = b"".join(
            b"SENT <" + rcpt.encode("utf-8", "surrogateescape") + b">\n" for rcpt in delivered
        )
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            try:
                os.pwrite(fd, lines, _used(fd))
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"{path}: cannot record deliveries: {exc.strerror}") from exc

    def drop(self, qid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(qid).unlink()

    def prune(self, present: set[str]) -> None:
        """Forget logs of messages no longer in outgoing."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) and entry.name[: -len(SUFFIX)] not in present:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _used(fd: int) -> int:
    """Bytes in use: up to the first NUL of the reserved room (or the whole file)."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    end = data.find(b"\0")
    return size if end < 0 else end
