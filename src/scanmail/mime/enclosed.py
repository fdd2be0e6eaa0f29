"""Encodings a body may enclose (uuencode, yEnc, BinHex), and every reading of an odd body."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from scanmail.mime import readings
from scanmail.mime.headers import BINHEX_ENCODINGS, IDENTITY, UU_ENCODINGS, YENC_ENCODINGS

_ENCLOSED = re.compile(
    rb"^(begin)(?:-base64)?[ \t]+[0-7]{3,4}[ \t]|^(=ybegin) |(\(This file must be converted)",
    re.MULTILINE,
)


def every_reading(raw: bytes, encodings: tuple[str, ...]) -> Iterator[bytes]:
    """Every reading of a raw body under each encoding its header names, and stacked."""
    tried = [e for e in encodings if e not in IDENTITY] or ["base64", "quoted-printable"]
    for encoding in tried:
        if encoding in ("base64", "quoted-printable"):
            yield from readings.readings(raw, encoding)
        elif encoding in UU_ENCODINGS:
            yield readings.uudecode(raw)
        elif encoding in YENC_ENCODINGS:
            yield readings.ydecode(raw)
        elif encoding in BINHEX_ENCODINGS:
            yield readings.binhex_decode(raw)
        else:  # an encoding no one knows: try the common ones
            yield from readings.readings(raw, "base64")
            yield from readings.readings(raw, "quoted-printable")
    if "base64" in tried and "quoted-printable" in tried:
        yield from readings.readings(readings.qp_standard(raw), "base64")
        yield readings.qp_standard(readings.b64_skip_junk(raw))


def enclosed(data: bytes) -> set[bytes]:
    if b"begin" not in data and b"(This file must" not in data:
        return set()  # the common case, found at memchr speed
    return {m.group(m.lastindex or 0) for m in _ENCLOSED.finditer(data)}


def markers(path: Path) -> set[bytes]:
    """Which enclosed encodings (uuencode, yEnc, BinHex) a text body seems to hold."""
    found: set[bytes] = set()
    with open(path, "rb") as handle:
        tail = b""
        while chunk := handle.read(1 << 20):
            found.update(enclosed(tail + chunk))
            tail = chunk[-64:]
    return found
