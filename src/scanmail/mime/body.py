"""A leaf's body decoded into a file as its lines arrive, within the byte budget."""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable
from pathlib import Path

from scanmail.mime import readings
from scanmail.mime.headers import UU_ENCODINGS

FLUSH = 1 << 20
TEXT_SNIFF = 1 << 16  # the first bytes of each part are kept for sniffing
_B64_ALLOWED = readings.B64_ALPHABET + b"=\r\n \t"


class Body:
    """Decodes a leaf's body lines into a file, within the byte budget; notes oddities."""

    def __init__(self, path: Path, encoding: str, charge: Callable[[int], None]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.out = os.fdopen(fd, "wb")
        self.encoding = encoding
        self.charge = charge
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.b64_rest = b""
        self.pad_seen = False
        self.pending_eol = b""
        self.size = 0
        self.odd = ""
        self.head = b""
        # Base64 as every encoder writes it (lines of whole quads, all alike, nothing
        # else: _even_lines), decoded by the C decoder: its file holds the body exactly.
        self.exact = encoding == "base64"
        self.width = 0  # the length of its lines, line end included

    def feed(self, line: bytes) -> None:
        if self.encoding in ("base64", "quoted-printable"):
            self.buffer.append(line)
            self.buffered += len(line)
            # base64 can be cut anywhere (the ragged rest is carried); quoted-printable
            # at a line end, unless a hostile body has none
            if self.buffered >= FLUSH and (self.encoding == "base64"
                                            or line.endswith((b"\n", b"\r"))
                                            or self.buffered >= 4 * FLUSH):
                self._flush()
            return
        if self.encoding in UU_ENCODINGS:  # line by line: a block holds many lines
            for one in line.splitlines():
                if not one.startswith(b"begin"):
                    self._write(readings.uu_line(one))
            return
        # Identity: the line end before a boundary belongs to the boundary (RFC 2046 5.1.1).
        if self.pending_eol:
            self._write(self.pending_eol)
        eol = 2 if line.endswith(b"\r\n") else 1 if line.endswith((b"\n", b"\r")) else 0
        self.pending_eol = line[len(line) - eol :] if eol else b""
        self._write(line[: len(line) - eol])

    def _flush(self, final: bool = False) -> None:
        data = b"".join(self.buffer)
        self.buffer, self.buffered = [], 0
        if self.encoding == "base64":
            self._check_base64(data)
            if self.exact and data and not self._continues(data, final):
                self.exact = False
            if (not (self.odd or self.b64_rest) and data.endswith(b"\n")
                    and (final or not data.rstrip().endswith(b"="))):
                # Whole lines of whole quads, nothing else: the C decoder skips the line
                # ends itself, without the copy that removing them first would cost. A
                # ragged end it refuses takes the general way below.
                try:
                    decoded = binascii.a2b_base64(data)
                except binascii.Error:
                    pass
                else:
                    self._write(decoded)
                    return
            if data:
                self.exact = False
            chars = self.b64_rest + data.translate(None, readings.B64_DELETE)
            usable = len(chars) if final else len(chars) - len(chars) % 4
            chars, self.b64_rest = chars[:usable], chars[usable:]
            self._write(readings.b64(chars))
        else:
            if not self.odd and not readings.is_plain_qp(data):
                self.odd = "odd quoted-printable"
            if final:
                data = data.rstrip(b"\r\n")
            self._write(readings.qp_standard(data))

    def _check_base64(self, data: bytes) -> None:
        """Note what makes clients read this base64 differently (C-speed checks only)."""
        if self.odd:
            return
        stripped = data.strip()
        if data.translate(None, _B64_ALLOWED):
            self.odd = "junk in base64"
        elif self.pad_seen and stripped:
            self.odd = "base64 data after padding"
        elif b"=" in stripped.rstrip(b"=").rstrip():
            self.odd = "base64 padding inside data"
        elif not _even_lines(stripped):
            self.exact = False  # decoded alike, but no encoder writes it: clamd sees it
            lines = stripped.replace(b"\r", b"").replace(b" ", b"").replace(b"\t", b"")
            lengths = set(map(len, lines.split(b"\n")[:-1]))
            if 0 in lengths:
                self.odd = "blank line inside base64"
            elif any(n % 4 for n in lengths):  # every encoder writes lines of whole quads
                self.odd = "ragged base64 lines"
        self.pad_seen = self.pad_seen or stripped.endswith(b"=")

    def _continues(self, data: bytes, final: bool) -> bool:
        """The lines of this flush go on as those before: none blank at its start, the same
        width, and all of it full lines unless it is the last (_even_lines checks within)."""
        width = data.find(b"\n") + 1
        if width <= 1 or data[:1] in (b"\r", b"\n") or self.width not in (0, width):
            return False
        self.width = width
        return final or len(data) % width == 0

    def _write(self, data: bytes) -> None:
        if data:
            self.charge(len(data))
            self.out.write(data)
            self.size += len(data)
            if len(self.head) < TEXT_SNIFF:
                self.head += data[: TEXT_SNIFF - len(self.head)]

    def close(self) -> int:
        try:
            if self.encoding in ("base64", "quoted-printable"):
                self._flush(final=True)
        finally:
            self.out.close()
        return self.size


def _even_lines(text: bytes) -> bool:
    """True if every line but the last has the same length, a whole number of quads, and
    all end alike (LF or CRLF), with no blank or tab: what every encoder writes.

    Checked at the places the line ends must be (a stride slice) and by counting them,
    about five times faster than splitting a megabyte into lines; False only means
    "look closer".
    """
    first = text.find(b"\n")
    if first < 0 or b" " in text or b"\t" in text:
        return first < 0 and b" " not in text and b"\t" not in text
    crlf = text[first - 1 : first] == b"\r"
    width = first - crlf
    if width <= 0 or width % 4:
        return False
    ends = text[first :: first + 1]
    newlines = len(text) - len(text.replace(b"\n", b""))  # count() is slower
    if newlines > len(ends) or ends[:newlines].strip(b"\n"):
        return False
    returns = len(text) - len(text.replace(b"\r", b""))
    if not crlf:
        return returns == 0
    return returns == newlines and not text[first - 1 :: first + 1][:newlines].strip(b"\r")
