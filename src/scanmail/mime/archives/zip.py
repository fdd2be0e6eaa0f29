"""The members of a zip archive, by Python's zipfile, and the names its local headers give.

Readers disagree about a zip: Explorer and unzip read the central directory, streaming
tools and repair programs the local headers. A member whose local header names it
otherwise, and a local header no directory entry points to, count too (issue 10).
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from scanmail.mime.archives.member import COPY, ArchiveError, Member

_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
           NotImplementedError, RuntimeError, zlib.error)
_LZMA_ERRORS: tuple[type[Exception], ...]
try:
    import lzma
    _LZMA_ERRORS = (lzma.LZMAError,)
except ImportError:  # pragma: no cover
    _LZMA_ERRORS = ()
MAX_LOCAL_SCAN = 256 << 20  # archives up to this size are searched for stray local headers


def members(path: Path) -> Iterator[Member]:
    """Every entry of the central directory, then local headers it does not list."""
    local_names = _local_headers(path)
    listed: set[int] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                listed.add(info.header_offset)
                names = [info.filename]
                other = local_names.get(info.header_offset)
                if other is not None and other not in names:
                    names.append(other)
                if info.is_dir():
                    yield Member(names, "zip", 0)
                    continue
                encrypted = bool(info.flag_bits & 0x1) or info.compress_type == 99
                yield Member(names, "zip", info.file_size,
                             None if encrypted else _chunks(archive, info), encrypted=encrypted)
    except _ERRORS + _LZMA_ERRORS as exc:
        raise ArchiveError("zip", exc) from None
    for offset, name in local_names.items():
        if offset not in listed:
            yield Member([name], "zip", 0)  # a name only some readers show


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            with archive.open(info) as data:
                while chunk := data.read(COPY):
                    yield chunk
        except _ERRORS + _LZMA_ERRORS as exc:
            raise ArchiveError("zip", exc) from None
    return chunks


def _local_headers(path: Path) -> dict[int, str]:
    """The name in every local file header found anywhere in the file, by offset."""
    found: dict[int, str] = {}
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 30 or size > MAX_LOCAL_SCAN:
            return found
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos = data.find(b"PK\x03\x04")
            while 0 <= pos <= size - 30:
                flags = struct.unpack_from("<H", data, pos + 6)[0]
                length = struct.unpack_from("<H", data, pos + 26)[0]
                raw = data[pos + 30:pos + 30 + length]
                if raw and len(raw) == length:
                    found[pos] = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
                pos = data.find(b"PK\x03\x04", pos + 4)
    return found
