"""What an entity's header block says about its body: type, boundaries, encodings, oddities."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32

from scanmail.mime import names

UU_ENCODINGS = ("x-uuencode", "uuencode", "x-uue", "uue", "x-uu")
YENC_ENCODINGS = ("x-yencode", "yencode", "x-yenc", "yenc")
BINHEX_ENCODINGS = ("x-binhex", "binhex", "mac-binhex40", "x-binhex40", "binhex40")
IDENTITY = ("7bit", "8bit", "binary", "")
MESSAGE_TYPES = ("message/rfc822", "message/global")


@dataclass(frozen=True)
class Head:
    """What a part's headers say about its body."""

    ctype: str
    boundaries: frozenset[bytes]
    encodings: tuple[str, ...]
    odd: tuple[str, ...]

    @property
    def encoding(self) -> str:
        return self.encodings[0] if self.encodings else ""


def read_head(header_block: bytes) -> Head:
    """Content type, every reading of the boundary, the transfer encodings, oddities."""
    values = names.header_values(header_block)
    ctypes = [v for k, v in values if k == "content-type"]
    ctes = [v for k, v in values if k == "content-transfer-encoding"]
    odd = []
    if len(ctypes) > 1 or len(ctes) > 1:
        odd.append("duplicate content header")
    main = ctypes[0].split(";", 1)[0].strip().lower() if ctypes else ""
    if main and not re.fullmatch(r"[a-z0-9!#$&.+^_-]+/[a-z0-9!#$&.+^_-]+", main):
        odd.append(f"odd content type {main[:40]!r}")
        main = main.replace(" ", "") if main.replace(" ", "").count("/") == 1 else ""
    boundaries: set[str] = set()
    if ctypes and "boundary" in " ".join(ctypes).lower():
        boundaries = {b for b in names.raw_readings(ctypes, ("boundary",)) if b}
        standard = Message(policy=compat32)
        standard["Content-Type"] = ctypes[0][:8192]  # Python's parameter parser is quadratic
        python = ""
        with contextlib.suppress(Exception):
            python = str(standard.get_boundary() or "")
        blank = any(b and not b.strip().strip("\"'") for b in boundaries)
        boundaries = {b.strip().strip("\"'") for b in boundaries if ";" not in b}
        if python:  # Python's reading, even with a ';' in it ("a; boundary=b"): issue 14
            boundaries.add(python.strip())
        if clamav := _clamav_boundary(ctypes[0]):
            boundaries.add(clamav)
        if blank:  # boundary=" ": a client that strips it splits at every "--" line
            odd.append("blank boundary")
        if len(boundaries) > 1:
            odd.append("ambiguous boundary")
    encodings = tuple(dict.fromkeys(re.findall(r"[a-z0-9-]+", " ".join(ctes).lower())))
    known = ("base64", "quoted-printable", *UU_ENCODINGS, *YENC_ENCODINGS, *BINHEX_ENCODINGS,
             *IDENTITY)
    if len(encodings) > 1 or any(e not in known for e in encodings):
        odd.append(f"odd transfer encoding {' '.join(encodings)[:40]!r}")
    if main in ("application/mac-binhex40", "application/binhex") and not encodings:
        encodings = ("binhex",)
    return Head(
        main, frozenset(b.encode("utf-8", "surrogateescape") for b in boundaries
                        if b or "blank boundary" in odd),
        encodings, tuple(odd),
    )


def match_boundary(line: bytes, bounds: list[frozenset[bytes]]) -> tuple[int, bool] | None:
    """(level, closing) if line is a delimiter of one of bounds, innermost first."""
    if not line.startswith(b"--") or not bounds:
        return None
    text = line.rstrip()[2:]
    for level in range(len(bounds) - 1, -1, -1):
        candidates = bounds[level]
        if text in candidates:
            return level, False
        if text.endswith(b"--") and text[:-2] in candidates:
            return level, True
    return None


def _clamav_boundary(ctype: str) -> str:
    """ClamAV's reading (message.c): the first argument named boundary, the value split at
    every ';', quotes or not ('boundary="a;b"' is a; 'x="y;boundary=c"' gives c)."""
    for argument in ctype.split(";")[1:]:
        name, equals, value = argument.partition("=")
        if equals and name.strip().lower() == "boundary":
            return value.strip().strip("\"'").strip()
    return ""
