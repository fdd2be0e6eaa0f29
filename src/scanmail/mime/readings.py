"""Transfer decodings, strict and lenient, as the many mail clients out there apply them.

A mail client that decodes a broken base64 or quoted-printable body differently from the
gateway can be handed a virus the gateway never saw (see the corpus noxxi-mime-is-broken).
So for a body that is not plainly well-formed, every common reading is produced, and each
distinct one is scanned. These work on bounded, in-memory bodies; well-formed bodies take
the streaming path in scanmail.mime.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterator

B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
B64_DELETE = bytes(c for c in range(256) if c not in B64_ALPHABET)
B64_DELETE_KEEP_PAD = bytes(c for c in range(256) if c not in B64_ALPHABET + b"=")
_HEX = rb"[0-9A-Fa-f]"
_LINES = re.compile(rb"\r\n|\r|\n")


def b64(chars: bytes) -> bytes:
    """Decode base64 alphabet characters, padding or trimming a ragged end."""
    if len(chars) % 4 == 1:
        chars = chars[:-1]
    if not chars:
        return b""
    return binascii.a2b_base64(chars + b"=" * (-len(chars) % 4))


def b64_skip_junk(text: bytes) -> bytes:
    """Ignore every character outside the alphabet, padding included (most clients)."""
    return b64(text.translate(None, B64_DELETE))


def b64_restart_at_pad(text: bytes) -> bytes:
    """Padding ends a run; decoding restarts after it (several clients and ClamAV)."""
    runs = re.split(rb"=+", text.translate(None, B64_DELETE_KEEP_PAD))
    return b"".join(b64(run) for run in runs)


def b64_stop_at_pad(text: bytes) -> bytes:
    """Padding ends the data (strict decoders)."""
    return b64(text.translate(None, B64_DELETE_KEEP_PAD).split(b"=", 1)[0])


def b64_quads(text: bytes) -> bytes:
    """Four characters at a time, padding dropped inside each quad."""
    chars = text.translate(None, B64_DELETE_KEEP_PAD)
    return b"".join(b64(chars[i : i + 4].replace(b"=", b"")) for i in range(0, len(chars), 4))


def b64_pad_as_zero(text: bytes) -> bytes:
    """Padding inside the data read as the zero digit."""
    return b64(text.replace(b"=", b"A").translate(None, B64_DELETE))


def b64_clean_lines(text: bytes) -> bytes:
    """Only lines that are pure base64; others are junk to skip."""
    kept = [line.strip() for line in _LINES.split(text)
            if re.fullmatch(rb"[ \t]*[A-Za-z0-9+/]+=*[ \t]*", line)]
    return b64(b"".join(kept).replace(b"=", b""))


def b64_line_prefixes(text: bytes) -> bytes:
    """Each line up to its first character outside the alphabet."""
    prefixes = [re.match(rb"[ \t]*([A-Za-z0-9+/]*)", line).group(1)  # type: ignore[union-attr]
                for line in _LINES.split(text)]
    return b64(b"".join(prefixes))


def b64_per_line(text: bytes) -> bytes:
    """Each line decoded on its own, a ragged end of line dropped."""
    out = []
    for line in _LINES.split(text):
        chars = line.translate(None, B64_DELETE)
        out.append(b64(chars[: len(chars) - len(chars) % 4]))
    return b"".join(out)


def b64_last_paragraph(text: bytes) -> bytes:
    """Only what follows the last blank line (junk before it is taken as a preamble)."""
    paragraphs = [p for p in re.split(rb"(?:\r\n|\r|\n)[ \t]*(?:\r\n|\r|\n)", text) if p.strip()]
    return b64_skip_junk(paragraphs[-1]) if paragraphs else b""


def qp_standard(text: bytes) -> bytes:
    """RFC 2045 quoted-printable, as Python's binascii reads it."""
    return binascii.a2b_qp(text)


def _soft_breaks(text: bytes) -> bytes:
    # '=' then white space then a line end: a soft break with transport padding.
    return re.sub(rb"=[ \t]*(?:\r\n|\r|\n)", b"", text)


def qp_drop_stray_equals(text: bytes) -> bytes:
    """'=' not followed by two hex digits is dropped."""
    return re.sub(
        rb"=(" + _HEX + _HEX + rb")?",
        lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"",
        _soft_breaks(text),
    )


def qp_drop_stray_pairs(text: bytes) -> bytes:
    """'=' not followed by two hex digits is dropped with the character after it."""
    return re.sub(
        rb"=(" + _HEX + _HEX + rb"|.)?",
        lambda m: bytes([int(m.group(1), 16)]) if m.group(1) and len(m.group(1)) == 2 else b"",
        _soft_breaks(text),
        flags=re.DOTALL,
    )


def qp_single_digit(text: bytes) -> bytes:
    """'=' followed by one hex digit is that value."""
    return re.sub(rb"=(" + _HEX + _HEX + rb"?)", lambda m: bytes([int(m.group(1), 16)]),
                  _soft_breaks(text))


def qp_upper_hex_only(text: bytes) -> bytes:
    """Only upper-case hex pairs are escapes (RFC 2045); '=' and two other characters go."""
    return re.sub(
        rb"=([0-9A-F]{2}|..?)",
        lambda m: bytes([int(m.group(1), 16)]) if re.fullmatch(rb"[0-9A-F]{2}", m.group(1))
        else b"",
        _soft_breaks(text),
        flags=re.DOTALL,
    )


def is_plain_qp(text: bytes) -> bool:
    """Well-formed quoted-printable: every '=' starts an upper-case hex pair or a soft break."""
    return re.search(rb"=(?![0-9A-F]{2}|\r?\n)", text) is None


BASE64_READINGS: tuple[Callable[[bytes], bytes], ...] = (
    b64_skip_junk, b64_restart_at_pad, b64_stop_at_pad, b64_quads, b64_pad_as_zero,
    b64_clean_lines, b64_line_prefixes, b64_per_line, b64_last_paragraph,
)
QP_READINGS: tuple[Callable[[bytes], bytes], ...] = (
    qp_standard, qp_drop_stray_equals, qp_drop_stray_pairs, qp_single_digit, qp_upper_hex_only,
)


def readings(text: bytes, encoding: str) -> Iterator[bytes]:
    """Every distinct lenient decoding of a body in a transfer encoding."""
    funcs = BASE64_READINGS if encoding == "base64" else QP_READINGS
    seen: set[bytes] = set()
    for func in funcs:
        try:
            data = func(text)
        except (binascii.Error, ValueError):
            continue
        if data and data not in seen:
            seen.add(data)
            yield data


# -- uuencode, yEnc and BinHex bodies ---------------------------------------------------
def uu_line(line: bytes) -> bytes:
    """One uuencoded line; lenient about encoders that pad short lines wrongly."""
    data = line.rstrip(b"\r\n")
    if not data or data in (b"end", b"`"):
        return b""
    try:
        return binascii.a2b_uu(data)
    except binascii.Error:
        length = (data[0] - 32) & 63
        try:
            return binascii.a2b_uu(data[: 1 + (length + 2) // 3 * 4])[:length]
        except binascii.Error:
            return b""


def uudecode(text: bytes) -> bytes:
    """A uuencoded body, with or without its begin/end lines."""
    out = []
    started = not re.search(rb"^begin[ \t]", text, re.MULTILINE)
    for line in _LINES.split(text):
        if not started:
            started = line.startswith(b"begin")
            continue
        if line.strip() == b"end":
            break
        out.append(uu_line(line))
    return b"".join(out)


def ydecode(text: bytes) -> bytes:
    """A yEnc body: =ybegin ... =yend, each byte plus 42, '=' escapes plus 64."""
    out = bytearray()
    inside = not re.search(rb"^=ybegin", text, re.MULTILINE)
    for line in _LINES.split(text):
        if line.startswith(b"=ybegin"):
            inside = True
            continue
        if line.startswith((b"=ypart", b"=yend")) or not inside:
            if line.startswith(b"=yend"):
                inside = False
            continue
        escape = False
        for byte in line:
            if escape:
                out.append((byte - 64 - 42) & 0xFF)
                escape = False
            elif byte == 0x3D:
                escape = True
            else:
                out.append((byte - 42) & 0xFF)
    return bytes(out)


_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"


def binhex_decode(text: bytes) -> bytes:
    """The data fork of a BinHex 4.0 body (RFC 1741)."""
    start = text.find(b"(This file must be converted with BinHex")
    colon = text.find(b":", start if start >= 0 else 0)
    if colon < 0:
        return b""
    end = text.find(b":", colon + 1)
    body = text[colon + 1 : end if end > 0 else len(text)]
    table = {c: i for i, c in enumerate(_HQX)}
    bits = 0
    nbits = 0
    packed = bytearray()
    for c in body:
        if c not in table:
            continue
        bits = (bits << 6) | table[c]
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            packed.append((bits >> nbits) & 0xFF)
    data = _unrle(bytes(packed))
    if len(data) < 2:
        return b""
    name_len = data[0]
    pos = 1 + name_len + 1 + 4 + 4 + 2  # name, version, type, creator, flags
    if pos + 8 > len(data):
        return b""
    fork_len = int.from_bytes(data[pos : pos + 4], "big")
    pos += 4 + 4 + 2  # data length, resource length, header CRC
    return data[pos : pos + fork_len]


def _unrle(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x90 and i + 1 < len(data):
            count = data[i + 1]
            if count == 0:
                out.append(0x90)
            elif out:
                out.extend(out[-1:] * (count - 1))
            i += 2
            continue
        out.append(byte)
        i += 1
    return bytes(out)
