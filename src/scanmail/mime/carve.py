"""The raw text of a message read again, whatever its MIME structure says.

Mail clients disagree on ambiguous mail, and some decode a run of base64-looking lines
wherever it stands; the walker decodes and scans each run found here (issue 14). Lone CRs
outside the bodies cut from what clamd scans keep them in (lone_cr_outside).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from scanmail.pieces import Cuts, pieces

MIN_RUN = 16  # bytes: shorter runs are words, not payloads
_LONE_CR = re.compile(rb"\r(?!\n)")
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


def lone_cr_outside(read: Callable[[int, int], bytes], size: int, cuts: Cuts) -> bool:
    """Whether a CR not followed by LF stands anywhere in [0, size) outside the cuts: a
    line end to clients and to this walker, perhaps none to ClamAV, which may then find
    the headers and bodies elsewhere. read(start, end) gives the raw bytes."""
    for start, length in pieces(0, size, cuts):
        pos, end = start, start + length
        while pos < end:
            stop = min(end, pos + READ_CHUNK + 1)  # one byte more: the LF after a CR
            chunk = read(pos, stop)
            if not chunk:
                break
            found = _LONE_CR.search(chunk)
            last = pos + len(chunk) >= end
            if found and (last or found.start() < len(chunk) - 1):
                return True
            pos = end if last else pos + len(chunk) - 1
    return False
