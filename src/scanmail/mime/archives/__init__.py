"""Members of the containers a decoded part may be, found by content, never by name.

A reader only reports: it yields each member (its names, and how to read its bytes) and
raises ArchiveError for what it cannot read. The walker decides what to do with each
member: it charges the limits, writes the bytes into the message's work folder and looks
inside them in turn (as CPython's email parser reports defects to its policy).

Which reader reads what (issue 10): zip by Python's zipfile (every central directory
entry, and local headers no directory points to); tar in every compression, single
gz/bz2/xz/zst files, cab, lzh, cpio and ISO 9660 (Rock Ridge, Joliet and plain names) by
libarchive, in process and streaming; 7z, rar 4 and 5, arj, UDF, VHD/VHDX and disk images
(FAT, NTFS, MBR/GPT) by 7-Zip, which alone reads them all, encrypted ones included, run
as a bounded subprocess; winmail.dat by tnefparse.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

from scanmail.mime.archives import libarchive, sevenzip, sniff, tnef
from scanmail.mime.archives import zip as zip_reader
from scanmail.mime.archives.member import ArchiveError, Member
from scanmail.mime.archives.sniff import is_container

__all__ = ["ArchiveError", "Member", "is_container", "members"]

_LIBARCHIVE = {"tar", "gz", "bz2", "xz", "zst", "cab", "lzh", "cpio", "iso"}
_SEVENZIP = {"7z", "rar", "arj", "udf", "vhd", "vhdx", "disk"}


def members(
    path: Path, size: int, head: bytes, name: str = "", scratch: Path | None = None,
    budget: int = 1 << 62,
) -> Generator[Member, None, None]:
    """The members of the container at path, if it is one.

    name is the container's own name (a single gz file's member is named after it);
    scratch a folder the reader may create and fill (7-Zip extracts there), at most
    budget bytes; the reader removes it when done.
    """
    found = sniff.kind(path, size, head)
    if found is None:
        return
    if found == "tnef":
        yield from tnef.members(path, size)
    elif found == "zip":
        yield from zip_reader.members(path)
    elif found in _LIBARCHIVE:
        yield from libarchive.members(path, found, name)
    elif found in _SEVENZIP:
        if scratch is None:
            raise ArchiveError(found, "no folder to extract into")
        yield from sevenzip.members(path, found, scratch, budget)
