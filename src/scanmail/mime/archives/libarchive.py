"""tar (plain, gz, bz2, xz, zst), single compressed files, cab, lzh, cpio and ISO 9660,
read by Debian's libarchive through libarchive-c: in process, streaming, one pass."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libarchive
from libarchive import ffi
from libarchive.read import ArchiveRead, new_archive_read

from scanmail.mime.archives.member import COPY, ArchiveError, Member

# The name gunzip (or bunzip2, unxz, unzstd, 7-Zip) writes for a compressed file.
_SUFFIXES = {
    "gz": ((".tgz", ".tar"), (".taz", ".tar"), (".gz", ""), (".z", ""), ("-gz", "")),
    "bz2": ((".tbz2", ".tar"), (".tbz", ".tar"), (".bz2", ""), (".bz", "")),
    "xz": ((".txz", ".tar"), (".xz", "")),
    "zst": ((".tzst", ".tar"), (".zst", ""), (".zstd", "")),
}
_lib: Any = ffi.libarchive
_lib.archive_read_set_options.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.archive_read_set_options.restype = ctypes.c_int
_lib.archive_entry_is_data_encrypted.argtypes = [ctypes.c_void_p]
_lib.archive_entry_is_data_encrypted.restype = ctypes.c_int
# ISO 9660 carries up to three name trees; Rock Ridge (libarchive's default) first.
_ISO_VIEWS = ("iso9660:!rockridge", "iso9660:!rockridge,iso9660:!joliet")


def members(path: Path, kind: str, name: str) -> Iterator[Member]:
    """The members of a libarchive-readable container of the given kind."""
    if kind in _SUFFIXES:
        yield from _compressed(path, kind, name)
        return
    seen: set[str] = set()
    for member in _entries(path, kind):
        seen.update(member.names)
        yield member
    if kind == "iso":  # the names Joliet and plain ISO 9660 readers show
        for options in _ISO_VIEWS:
            for member in _entries(path, kind, options=options, data=False):
                fresh = [n for n in member.names if n not in seen]
                seen.update(fresh)
                if fresh:
                    yield Member(fresh, kind, 0)


def _compressed(path: Path, kind: str, name: str) -> Iterator[Member]:
    """A compressed tar's members; else the one file the decompressor would write."""
    try:
        found = False
        for member in _entries(path, f"tar.{kind}", tar_only=True):
            found = True
            yield member
        if found:
            return
    except _NotTar:
        pass  # no archive inside (zeros read as an empty tar too): the one file it holds
    names = [_decompressed_name(name, kind)]
    stored = _gzip_name(path) if kind == "gz" else None
    if stored and stored not in names:
        names.append(stored)
    yield from _entries(path, kind, raw=True, names=names)


class _NotTar(Exception):
    """A compressed file that holds no archive libarchive knows."""


def _entries(
    path: Path, kind: str, *, options: str = "", data: bool = True, raw: bool = False,
    tar_only: bool = False, names: list[str] | None = None,
) -> Iterator[Member]:
    try:
        with new_archive_read("raw" if raw else "all", "all") as handle:
            if options and _lib.archive_read_set_options(handle, options.encode()) != 0:
                raise ArchiveError(kind, f"libarchive refused options {options}")
            ffi.read_open_filename_w(handle, str(path), COPY)
            for entry in ArchiveRead(handle):
                member_names = names or [str(entry.pathname or "")]
                if not entry.isreg or not data:
                    yield Member(member_names, kind, 0)  # a folder, link or device: no bytes
                    continue
                encrypted = _lib.archive_entry_is_data_encrypted(entry._entry_p) > 0
                yield Member(member_names, kind, max(0, int(entry.size or 0)),
                             None if encrypted else _chunks(entry, kind), encrypted=encrypted)
    except libarchive.ArchiveError as exc:
        if tar_only and "Unrecognized archive format" in str(exc):
            raise _NotTar from None
        raise ArchiveError(kind, _problem(exc)) from None


def _chunks(entry: Any, kind: str) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            for block in entry.get_blocks(COPY):
                yield bytes(block)
        except libarchive.ArchiveError as exc:
            raise ArchiveError(kind, _problem(exc)) from None
    return chunks


def _problem(exc: Exception) -> str:
    return str(exc).split(" (errno=", 1)[0]


def _decompressed_name(name: str, kind: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    low = base.lower()
    for suffix, replacement in _SUFFIXES[kind]:
        if low.endswith(suffix) and len(base) > len(suffix):
            return base[:-len(suffix)] + replacement
    return base  # 7-Zip keeps an unknown suffix's name (gunzip would refuse)


def _gzip_name(path: Path) -> str | None:
    """The original name gzip -N stored in the header (FNAME), if any (RFC 1952)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if len(head) < 10 or not head[3] & 0x08:
        return None
    pos = 10
    if head[3] & 0x04:
        pos += 2 + struct.unpack_from("<H", head, pos)[0]
    end = head.find(b"\0", pos)
    return head[pos:end].decode("latin-1") if end > pos else None
