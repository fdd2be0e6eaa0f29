"""The raw text of a message read again, whatever its MIME structure says.

Mail clients disagree on ambiguous mail, and some decode a run of base64-looking lines
wherever it stands; the walker decodes and scans each run found here (issue 14). Text
that ClamAV's mail parser reads otherwise than the walker keeps a message whole for
clamd (read_alike_outside).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from scanmail.pieces import Cuts, pieces

MIN_RUN = 16  # bytes: shorter runs are words, not payloads
_LONE_CR = re.compile(rb"\r(?!\n)")
# What ClamAV reads otherwise (read_alike_outside), each searched for on its own: one
# regex of alternatives tries each at every position, ten times slower.
_DASH_CONTROL = re.compile(rb"\n--[^\r\n]*[\t\x0b\x0c]")  # in the text after a "\n"
_UU_START = re.compile(rb"\nbegin[ \t]+[0-9]{3}")  # in the lowercased text after a "\n"
_ENCODED_STARTS = (b"=ybegin", b"(this file must be converted")
CLAMAV_LINE = 999  # its mail parser reads lines of at most 999 bytes (1000 with the NUL)
READ_CHUNK = 1 << 20
# A run of base64-looking lines. Searched for from a newline (a literal the regex engine
# skips to at C speed), not from every position with a MULTILINE ^: ten times faster.
_B64_LINE = rb"[ \t]*+[A-Za-z0-9+/]{4,}+={0,2}[ \t]*+\r?\n"
_RUN_AT = re.compile(rb"(?:" + _B64_LINE + rb")+")
_RUN = re.compile(rb"\n((?:" + _B64_LINE + rb")+)")


def base64_runs(raw: bytes, plain: list[tuple[int, int]]) -> list[bytes]:
    """The runs of base64 lines in raw outside the plain ranges (well-formed base64 bodies,
    which carving would only find again). Lone CRs end lines too: raw is then read with
    every line end as LF, and the ranges, no longer matching, are not skipped."""
    if _LONE_CR.search(raw):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        plain = []
    return [run for start, end in _gaps(plain, len(raw))
            for run in _runs(raw, start, end) if len(run) >= MIN_RUN]


def _runs(raw: bytes, start: int, end: int) -> Iterator[bytes]:
    """The runs of base64 lines in raw[start:end], each starting at a line's start."""
    pos = start
    if start == 0 or raw[start - 1 : start] == b"\n":
        first = _RUN_AT.match(raw, start, end)
        if first:
            yield first.group()
            pos = first.end() - 1  # its last newline may precede the next run
    for match in _RUN.finditer(raw, pos, end):
        yield match.group(1)


def _gaps(ranges: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """The stretches of [0, size) outside the given (sorted, disjoint) ranges."""
    pos = 0
    for start, end in sorted(ranges):
        if start > pos:
            yield pos, start
        pos = max(pos, end)
    if pos < size:
        yield pos, size


def read_alike_outside(read: Callable[[int, int], bytes], size: int, cuts: Cuts) -> bool:
    """Whether [0, size) outside the cuts holds nothing that ClamAV's mail parser reads
    otherwise than the walker: no lone CR (a line end here and to clients, perhaps none
    to ClamAV), no NUL (which it drops), no line of CLAMAV_LINE bytes or more (which it
    splits), no tab, VT or FF in a line that starts with '--' (a boundary here, not to
    ClamAV, which trims only spaces), no uuencode 'begin NNN' line, yEnc or BinHex start
    (after which ClamAV takes the lines that follow, boundaries too, for encoded data).
    Else where it finds headers and bodies may differ from here, and the message goes to
    it whole. read(start, end) gives the raw bytes;
    they are read in whole lines."""
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
    if b"\0" in chunk or _LONE_CR.search(chunk):
        return True
    if max(map(len, chunk.split(b"\n"))) >= CLAMAV_LINE:
        return True
    lowered = b"\n" + chunk.lower()
    return bool(_DASH_CONTROL.search(lowered) or _UU_START.search(lowered)
                or any(start in lowered for start in _ENCODED_STARTS))
