"""The bodies the raw message goes to clamd without (Explosion.cuts), and when none may go.

A well-formed base64 body of a binary part at least CUT_MIN long, decoded exactly into a
file that is scanned, is left out of the raw message clamd scans, but for its first line
(the attachment keeps its name and first bytes there, which signatures on mail containers
test). Such a body holds only base64 lines, all alike: no reader can find a boundary or a
header in it, and every reader decodes it to the bytes scanned. A message with anything
ClamAV's mail parser reads otherwise than the walker goes whole (read_alike_outside).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from scanmail.mime.carve import LONE_CR
from scanmail.pieces import Cuts, pieces

CUT_MIN = 16 << 10
# Exactly these major types: clamd's mail parser takes other words for text when they
# look like it (texts/html, plain/html) and runs its phishing checks on them.
BINARY_TYPES = frozenset({"application", "image", "audio", "video"})
MAX_FIRST_LINE = 1024  # a first line longer than this: no cut
CLAMAV_LINE = 999  # its mail parser reads lines of at most 999 bytes (1000 with the NUL)
READ_CHUNK = 1 << 20
# Each searched for on its own: one regex of alternatives tries each at every position,
# ten times slower.
_DASH_CONTROL = re.compile(rb"\n--[^\r\n]*[\t\x0b\x0c]")  # in the text after a "\n"
_UU_START = re.compile(rb"\nbegin[ \t]+[0-9]{3}")  # in the lowercased text after a "\n"
_ENCODED_STARTS = (b"=ybegin", b"(this file must be converted")

Read = Callable[[int, int], bytes]  # the raw bytes [start, end) of the message


def worth_cutting(ctype: str, length: int) -> bool:
    """Whether an exactly decoded base64 body of this type and length is cut."""
    return length >= CUT_MIN and ctype.split("/", 1)[0] in BINARY_TYPES


def past_first_line(read: Read, start: int, end: int) -> tuple[int, int] | None:
    """The cut for the body [start, end): all of it but its first line."""
    first = read(start, start + MAX_FIRST_LINE).find(b"\n") + 1
    return (start + first, end) if first else None


def read_alike_outside(read: Read, size: int, cuts: Cuts) -> bool:
    """Whether [0, size) outside the cuts holds nothing that ClamAV's mail parser reads
    otherwise than the walker: no lone CR (a line end here and to clients, perhaps none
    to ClamAV), no NUL (which it drops), no line of CLAMAV_LINE bytes or more (which it
    splits), no tab, VT or FF in a line that starts with '--' (a boundary here, not to
    ClamAV, which trims only spaces), no uuencode 'begin NNN' line, yEnc or BinHex start
    (after which ClamAV takes the lines that follow, boundaries too, for encoded data).
    Else where it finds headers and bodies may differ from here. The bytes are read in
    whole lines."""
    for start, length in pieces(0, size, cuts):
        pos, end = start, start + length
        while pos < end:
            chunk = read(pos, min(end, pos + READ_CHUNK))
            if not chunk:
                break
            if pos + len(chunk) < end:
                whole = chunk.rfind(b"\n") + 1
                if not whole:
                    return False  # a line longer than a chunk
                chunk = chunk[:whole]
            if _read_otherwise(chunk):
                return False
            pos += len(chunk)
    return True


def _read_otherwise(chunk: bytes) -> bool:
    """Whether whole lines hold what read_alike_outside looks for."""
    if b"\0" in chunk or LONE_CR.search(chunk):
        return True
    if max(map(len, chunk.split(b"\n"))) >= CLAMAV_LINE:
        return True
    lowered = b"\n" + chunk.lower()
    return bool(_DASH_CONTROL.search(lowered) or _UU_START.search(lowered)
                or any(start in lowered for start in _ENCODED_STARTS))
