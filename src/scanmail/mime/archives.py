"""Members of the containers a decoded part may be: zip archives and TNEF winmail.dat.

A reader only reports: it yields each member (its names, and how to read its bytes) and
raises ArchiveError for what it cannot read. The walker decides what to do with each
member: it charges the limits, writes the bytes into the message's work folder and looks
inside them in turn (as CPython's email parser reports defects to its policy).
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

# tnefparse logs every oddity of hostile input at WARNING and above; its verdicts reach us
# as exceptions instead, so keep its chatter out of the mail log.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
TNEF_MAGIC = b"\x78\x9f\x3e\x22"
MAX_TNEF = 64 << 20
_COPY = 1 << 20
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
               NotImplementedError, RuntimeError, zlib.error)


class ArchiveError(Exception):
    """A container, or a member of it, that cannot be read (a defect of the message)."""

    def __init__(self, kind: str, problem: object) -> None:
        super().__init__(f"{kind}: {problem}")
        self.kind = kind
        self.problem = str(problem)


@dataclass(frozen=True)
class Member:
    """One member of a container, as its reader found it."""

    names: list[str]
    origin: str  # the container's kind: zip | tnef
    size: int  # as the container declares it (a hostile one may lie)
    chunks: Callable[[], Iterator[bytes]] | None = None  # its bytes; None: not to be read
    data: bytes | None = None  # its bytes, where the reader already holds them


def members(path: Path, size: int, head: bytes) -> Generator[Member, None, None]:
    """The members of the container at path, if it is one (found by content, not name)."""
    if head.startswith(TNEF_MAGIC):
        yield from _tnef(path, size)
    elif _is_zip(path, size, head):
        yield from _zip(path)


def _is_zip(path: Path, size: int, head: bytes) -> bool:
    """A zip archive, even behind a prefix: readers find it by its end record, as clients do."""
    if head.startswith(ZIP_MAGIC):
        return True
    if size <= len(head):
        return b"PK\x05\x06" in head
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _zip(path: Path) -> Iterator[Member]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                readable = not (info.is_dir() or info.flag_bits & 0x1)  # folders; encrypted
                nested = readable and _looks_nested(archive, info)
                yield Member([info.filename], "zip", info.file_size,
                             _zip_chunks(archive, info) if nested else None)
    except _ZIP_ERRORS as exc:
        raise ArchiveError("zip", exc) from None


def _zip_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            with archive.open(info) as data:
                while chunk := data.read(_COPY):
                    yield chunk
        except _ZIP_ERRORS as exc:
            raise ArchiveError("zip", exc) from None
    return chunks


def _looks_nested(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Is this member itself an archive worth opening for names?"""
    if info.filename.lower().endswith((".zip", ".dat", ".tnef")):
        return True
    try:
        with archive.open(info) as data:
            head = data.read(4)
    except _ZIP_ERRORS:
        return False
    return head.startswith(ZIP_MAGIC) or head == TNEF_MAGIC


def _tnef(path: Path, size: int) -> Iterator[Member]:
    from tnefparse import TNEF  # a slow import, needed only for winmail.dat

    if size > MAX_TNEF:
        raise ArchiveError("tnef", "too large to list")
    try:
        tnef = TNEF(path.read_bytes(), do_checksum=False)
        attachments = list(tnef.attachments)
    except Exception as exc:  # noqa: BLE001 - hostile input; any parser failure is a defect
        raise ArchiveError("tnef", exc) from None
    for attachment in attachments:
        found: list[str] = []
        for getter in (attachment.long_filename, lambda a=attachment: a.name):
            try:
                name = getter()
            except Exception:  # noqa: BLE001
                continue
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if name and name not in found:
                found.append(str(name).strip("\x00"))
        data = attachment.data if isinstance(attachment.data, bytes) else b""
        yield Member(found, "tnef", len(data), data=data or None)
