"""Names (and nested archives) inside a decoded part: zip archives and TNEF winmail.dat."""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scanmail.mime import Part, Walker

# tnefparse logs every oddity of hostile input at WARNING and above; its verdicts reach us
# as exceptions instead, so keep its chatter out of the mail log.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
TNEF_MAGIC = b"\x78\x9f\x3e\x22"
MAX_TNEF = 64 << 20
_COPY = 1 << 20


def look_inside(walker: Walker, part: Part, head: bytes) -> None:
    """Add the members of a zip or TNEF part to the walk, as parts of their own."""
    if head.startswith(TNEF_MAGIC):
        _tnef(walker, part)
    elif _is_zip(part, head):
        _zip(walker, part)


def _is_zip(part: Part, head: bytes) -> bool:
    """A zip archive, even behind a prefix: readers find it by its end record, as clients do."""
    if head.startswith(ZIP_MAGIC):
        return True
    if part.size <= len(head):
        return b"PK\x05\x06" in head
    assert part.path is not None
    try:
        return zipfile.is_zipfile(part.path)
    except OSError:
        return False


def _zip(walker: Walker, part: Part) -> None:
    from scanmail.mime import LimitExceeded

    assert part.path is not None
    try:
        with zipfile.ZipFile(part.path) as archive:
            for info in archive.infolist():
                member = walker.new_part(
                    part.depth + 1, "application/octet-stream", "zip", [info.filename]
                )
                if info.is_dir() or info.flag_bits & 0x1:  # folders; encrypted members
                    continue
                if not _looks_nested(archive, info):
                    continue
                walker.charge(info.file_size)
                path = walker.new_file(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out, archive.open(info) as data:
                    copied = 0
                    while chunk := data.read(_COPY):
                        copied += len(chunk)
                        if copied > info.file_size:  # a lying header: charge what comes
                            walker.charge(len(chunk))
                        out.write(chunk)
                member.size = copied
                walker.after_leaf(member)
    except LimitExceeded:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, zlib.error) as exc:
        walker.result.defects.append(f"zip {part.index}: {exc}")


def _looks_nested(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Is this member itself an archive worth opening for names?"""
    if info.filename.lower().endswith((".zip", ".dat", ".tnef")):
        return True
    try:
        with archive.open(info) as data:
            head = data.read(4)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, zlib.error):
        return False
    return head.startswith(ZIP_MAGIC) or head == TNEF_MAGIC


def _tnef(walker: Walker, part: Part) -> None:
    from tnefparse import TNEF

    assert part.path is not None
    if part.size > MAX_TNEF:
        walker.result.defects.append(f"tnef {part.index}: too large to list")
        return
    try:
        tnef = TNEF(part.path.read_bytes(), do_checksum=False)
        attachments = list(tnef.attachments)
    except Exception as exc:  # noqa: BLE001 - hostile input; any parser failure is a defect
        walker.result.defects.append(f"tnef {part.index}: {exc}")
        return
    for attachment in attachments:
        found = []
        for getter in (attachment.long_filename, lambda a=attachment: a.name):
            try:
                name = getter()
            except Exception:  # noqa: BLE001
                continue
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if name and name not in found:
                found.append(str(name).strip("\x00"))
        member = walker.new_part(part.depth + 1, "application/octet-stream", "tnef", found)
        data = attachment.data if isinstance(attachment.data, bytes) else b""
        if data:
            walker.fill(member, data)
