"""The Obtuse spool file (FROM/RCPT/SENT/BODY): read, write atomically, move; the run lock."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from scanmail import durable
from scanmail.errors import MalformedSpoolFile, SpoolError

FOLDERS = ("incoming", "outgoing", "quarantine", "failed", "tmp", "etc", "bin", "var")
MESSAGE_FOLDERS = ("incoming", "outgoing", "quarantine", "failed")
COMPLETE_MODE = 0o750  # owner and group execute bits: the Obtuse "file is complete" mark
INCOMPLETE_MODE = 0o600
PREFIX = "smtpd"
MAX_ENVELOPE_BYTES = 4 << 20  # a spool header larger than this is not an envelope
_ADDRESS = re.compile(rb"<([^<>\x00\r\n]*)>")
_QID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class Envelope:
    """MAIL FROM, the recipients still to deliver, and those already delivered (SENT)."""

    sender: str
    recipients: tuple[str, ...]
    sent: tuple[str, ...] = field(default=())

    def to_bytes(self) -> bytes:
        """The spool header, up to and including the BODY line."""
        lines = [f"FROM <{self.sender}>"]
        lines += [f"RCPT <{rcpt}>" for rcpt in self.recipients]
        lines += [f"SENT <{rcpt}>" for rcpt in self.sent]
        for address in (self.sender, *self.recipients, *self.sent):
            if any(c in address for c in "<>\r\n\x00"):
                raise ValueError(f"address {address!r} cannot be stored in a spool file")
        return ("\n".join(lines) + "\nBODY\n").encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class SpoolFile:
    """A complete spool file: where it is, its envelope, and where the message begins."""

    path: Path
    envelope: Envelope
    body_offset: int
    size: int

    @property
    def qid(self) -> str:
        return self.path.name

    @property
    def message_size(self) -> int:
        return self.size - self.body_offset

    def open_message(self) -> BinaryIO:
        """The RFC 5322 message bytes, positioned at their start."""
        handle = open(self.path, "rb")  # noqa: SIM115 - returned to the caller
        handle.seek(self.body_offset)
        return handle

    def read_message(self) -> bytes:
        with self.open_message() as handle:
            return handle.read()


def parse_envelope(handle: BinaryIO) -> tuple[Envelope, int]:
    """Read the envelope lines up to BODY; raise MalformedSpoolFile if they are not one."""
    sender: str | None = None
    recipients: list[str] = []
    sent: list[str] = []
    offset = 0
    while True:
        line = handle.readline(MAX_ENVELOPE_BYTES)
        offset += len(line)
        if not line:
            raise MalformedSpoolFile("no BODY line")
        if offset > MAX_ENVELOPE_BYTES:
            raise MalformedSpoolFile("envelope too long")
        text = line.rstrip(b"\r\n")
        if text == b"BODY":
            break
        keyword, _, rest = text.partition(b" ")
        match = _ADDRESS.fullmatch(rest.strip())
        if keyword not in (b"FROM", b"RCPT", b"SENT") or match is None:
            shown = text[:60].decode("ascii", "backslashreplace")
            raise MalformedSpoolFile(f"bad envelope line {shown!r}")
        address = match.group(1).decode("utf-8", "surrogateescape")
        if keyword == b"FROM":
            if sender is not None:
                raise MalformedSpoolFile("two FROM lines")
            sender = address
        elif keyword == b"RCPT":
            recipients.append(address)
        else:
            sent.append(address)
    if sender is None:
        raise MalformedSpoolFile("no FROM line")
    if not recipients and not sent:
        raise MalformedSpoolFile("no RCPT line")
    return Envelope(sender, tuple(recipients), tuple(sent)), offset


def read_spool_file(path: Path) -> SpoolFile:
    """Open a spool file and parse its envelope."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        envelope, offset = parse_envelope(handle)
    return SpoolFile(path, envelope, offset, size)


def is_complete(mode: int) -> bool:
    """A writer marks a finished file by setting the owner and group execute bits."""
    return stat.S_ISREG(mode) and mode & 0o110 == 0o110


def is_spool_name(name: str) -> bool:
    """A name a spool file may have (dot names are other tools' partial files)."""
    return not name.startswith(".") and _QID.fullmatch(name) is not None


def list_complete(folder: Path) -> list[Path]:
    """Complete spool files in folder, oldest first (then by name, for a stable order)."""
    found: list[tuple[float, str, Path]] = []
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return []
    with entries:
        for entry in entries:
            if not is_spool_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if is_complete(st.st_mode):
                found.append((st.st_mtime, entry.name, Path(entry.path)))
    found.sort()
    return [path for _, _, path in found]


class Spool:
    """The spool hierarchy under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / name

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def outgoing(self) -> Path:
        return self.root / "outgoing"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def var(self) -> Path:
        return self.root / "var"

    def check(self) -> None:
        """Raise SpoolError unless the message folders exist."""
        for name in ("incoming", "outgoing", "quarantine", "tmp", "var"):
            if not self.folder(name).is_dir():
                raise SpoolError(
                    f"{self.folder(name)}: spool folder missing (run 'scanmail init')"
                )

    def new_qid(self) -> str:
        """A spool name not used in any message folder."""
        for _ in range(100):
            qid = PREFIX + secrets.token_hex(6)
            if not any((self.root / name / qid).exists() for name in (*MESSAGE_FOLDERS, "tmp")):
                return qid
        raise SpoolError("cannot find a free spool name")

    def write(
        self,
        folder: str,
        envelope: Envelope,
        chunks: Iterable[bytes],
        qid: str | None = None,
        complete: bool = True,
        replace: bool = False,
    ) -> Path:
        """Write a spool file atomically: build it in tmp/, fsync, mark complete, rename in.

        A file of that name already in folder is never overwritten (issue 14): the new
        one gets a fresh name (see place()), unless replace (a file rewriting itself).
        """
        qid = qid or self.new_qid()
        target = self.folder(folder) / qid
        data = itertools.chain([envelope.to_bytes()], chunks)
        mode = COMPLETE_MODE if complete else INCOMPLETE_MODE
        try:
            if replace:
                durable.write_file(target, data, mode, partial=self.tmp / qid)
                return target
            built = self.tmp / qid
            durable.write_synced(built, data, mode)
        except OSError as exc:
            raise SpoolError(f"{target}: cannot write spool file: {exc.strerror}") from exc
        try:
            return self.place(built, folder, qid, sync_source=False)  # tmp's state is moot
        except SpoolError:
            with contextlib.suppress(OSError):
                os.unlink(built)
            raise

    def move(self, path: Path, folder: str) -> Path:
        """Rename a spool file into another folder of the same spool, durably.

        Never over a file of the same name (the real Obtuse smtpd makes names unique only
        within incoming): the moved file then gets a fresh name.
        """
        return self.place(path, folder, path.name)

    def place(self, path: Path, folder: str, name: str, sync_source: bool = True) -> Path:
        """Rename path to folder/name, or to a fresh name if that one is taken; durably.

        The source folder is fsynced too (a message must leave incoming for good), unless
        it is tmp/, whose leftovers are never delivered (recover() removes them).
        """
        try:
            target = rename_fresh(path, self.folder(folder), name)
            durable.fsync_dir(target.parent)
            if sync_source:
                durable.fsync_dir(path.parent)
        except OSError as exc:
            raise SpoolError(f"{path}: cannot move to {folder}: {exc.strerror}") from exc
        return target


def fresh_name(name: str) -> str:
    """name with a random tail: the name a file gets when its own is taken."""
    return f"{name[:100]}-{secrets.token_hex(4)}"


def rename_fresh(path: Path, folder: Path, name: str, taken: tuple[str, ...] = ()) -> Path:
    """Rename path into folder as name, or name-<random> if a file of that name is there.

    Race-free: the rename itself refuses an existing target (renameat2 RENAME_NOREPLACE),
    so nothing another process puts there between a check and the rename is overwritten.
    A name is also taken if folder holds name+suffix for a suffix in taken (the
    quarantine's <qid>.d extras).
    """
    for attempt in range(100):
        candidate = name if attempt == 0 else fresh_name(name)
        if any(os.path.lexists(folder / (candidate + suffix)) for suffix in taken):
            continue
        target = folder / candidate
        try:
            rename_noreplace(path, target)
        except FileExistsError:
            continue
        return target
    raise OSError(errno.EEXIST, f"no free name for {name} in {folder}")


_RENAME_NOREPLACE = 1
_libc: ctypes.CDLL | None = None


def rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with FileExistsError instead of replacing dst.

    renameat2(RENAME_NOREPLACE) where the kernel and the filesystem have it; elsewhere
    link(2), which never replaces either, then unlink (a crash between the two leaves
    the file under both names: never lost).
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(_libc, "renameat2", None)
    if function is not None:
        at_fdcwd = -100
        result = function(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst),
                          _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    os.link(src, dst, follow_symlinks=False)
    os.unlink(src)


def mark_complete(path: Path, durable: bool = True) -> None:
    """Set the completion mode on a file already in place (durably, unless told not to)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, COMPLETE_MODE)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def iter_message(source: SpoolFile, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The message bytes of a spool file, in chunks."""
    with source.open_message() as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock for a run; yields False if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # no planted link
    except OSError as exc:
        raise SpoolError(f"{path}: cannot open lock file: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield False
                return
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # a full disk (issue 14): exit 74, not a traceback
            raise SpoolError(f"{path}: cannot write lock file: {exc.strerror}") from exc
        yield True
    finally:
        os.close(fd)
