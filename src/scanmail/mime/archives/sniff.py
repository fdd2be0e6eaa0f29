"""Which container a file is, by its content alone (never its name or Content-Type)."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
TNEF_MAGIC = b"\x78\x9f\x3e\x22"
HEAD = 0x8000 + 8 * 2048  # ISO 9660 and UDF volume descriptors start at sector 16

# (kind, offset, magic): checked in order on the file's first bytes.
_MAGIC = (
    ("7z", 0, b"7z\xbc\xaf\x27\x1c"),
    ("rar", 0, b"Rar!\x1a\x07"),
    ("gz", 0, b"\x1f\x8b"),
    ("xz", 0, b"\xfd7zXZ\x00"),
    ("zst", 0, b"\x28\xb5\x2f\xfd"),
    ("cab", 0, b"MSCF\0\0\0\0"),
    ("arj", 0, b"\x60\xea"),
    ("cpio", 0, b"070701"),
    ("cpio", 0, b"070702"),
    ("cpio", 0, b"070707"),
    ("cpio", 0, b"\xc7\x71"),
    ("cpio", 0, b"\x71\xc7"),
    ("vhdx", 0, b"vhdxfile"),
    ("vhd", 0, b"conectix"),
    ("tar", 257, b"ustar"),
)


def kind(path: Path, size: int, head: bytes) -> str | None:
    """The container kind of the file at path, or None: zip, 7z, rar, tar, gz, ..., fat."""
    if head.startswith(TNEF_MAGIC):
        return "tnef"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if size > len(head) and len(head) < HEAD:
        with open(path, "rb") as handle:
            head = handle.read(HEAD)
    found = _by_magic(head)
    if found is not None:
        return found
    if size >= 512 and _tail(path, 512).startswith(b"conectix"):  # a fixed VHD: footer only
        return "vhd"
    if _is_zip(path, size, head):
        return "zip"
    return None


def is_container(head: bytes) -> bool:
    """Do a file's first bytes (at least HEAD of them, or all) say it is a container?"""
    return (head.startswith((TNEF_MAGIC, *ZIP_MAGIC)) or b"PK\x05\x06" in head[-(1 << 16):]
            or _by_magic(head) is not None)


def _by_magic(head: bytes) -> str | None:
    for name, offset, magic in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bz2"
    if head[2:3] == b"-" and head[3:5] in (b"lh", b"lz") and head[6:7] == b"-":
        return "lzh"
    if _tar_checksum_ok(head[:512]):
        return "tar"
    descriptors = {head[0x8001 + 2048 * k:0x8006 + 2048 * k] for k in range(8)}
    if descriptors & {b"NSR02", b"NSR03"}:
        return "udf"
    if b"CD001" in descriptors:
        return "iso"
    if head[512:520] == b"EFI PART":
        return "disk"
    if head[510:512] == b"\x55\xaa":
        if head[3:11] == b"NTFS    ":
            return "disk"
        if head[54:62] in (b"FAT12   ", b"FAT16   ") or head[82:90] == b"FAT32   ":
            return "disk"
        if _mbr_plausible(head):
            return "disk"
    return None


def _is_zip(path: Path, size: int, head: bytes) -> bool:
    """A zip behind a prefix (self-extracting): readers find it by its end record."""
    if size <= len(head):
        return b"PK\x05\x06" in head
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - size))
        return handle.read(size)


def _tar_checksum_ok(block: bytes) -> bool:
    """An old (v7) tar header has no magic, only its checksum."""
    if len(block) < 512 or block[0] == 0:
        return False
    raw = block[148:156].split(b"\0", 1)[0].strip(b" \0")
    try:
        stored = int(raw, 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:512])


def _mbr_plausible(head: bytes) -> bool:
    """A partition table whose entries make sense (a DOS boot sector alone is not one)."""
    found = False
    for i in range(4):
        entry = head[446 + 16 * i:462 + 16 * i]
        boot, ptype = entry[0], entry[4]
        start, count = struct.unpack("<II", entry[8:16])
        if boot not in (0x00, 0x80):
            return False
        if ptype:
            if start == 0 or count == 0:
                return False
            found = True
    return found
