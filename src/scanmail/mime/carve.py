"""Base64 runs found in a message's raw text, whatever its MIME structure says.

Mail clients disagree on ambiguous mail, and some decode a run of base64-looking lines
wherever it stands; the walker decodes and scans each run found here (issue 14).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from scanmail.pieces import pieces

MIN_RUN = 16  # bytes: shorter runs are words, not payloads
LONE_CR = re.compile(rb"\r(?!\n)")
# A run of base64-looking lines. Searched for from a newline (a literal the regex engine
# skips to at C speed), not from every position with a MULTILINE ^: ten times faster.
_B64_LINE = rb"[ \t]*+[A-Za-z0-9+/]{4,}+={0,2}[ \t]*+\r?\n"
_RUN_AT = re.compile(rb"(?:" + _B64_LINE + rb")+")
_RUN = re.compile(rb"\n((?:" + _B64_LINE + rb")+)")


def base64_runs(raw: bytes, plain: list[tuple[int, int]]) -> list[bytes]:
    """The runs of base64 lines in raw outside the plain ranges (well-formed base64 bodies,
    which carving would only find again). Lone CRs end lines too: raw is then read with
    every line end as LF, and the ranges, no longer matching, are not skipped."""
    if LONE_CR.search(raw):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        plain = []
    return [run for start, length in pieces(0, len(raw), plain)
            for run in _runs(raw, start, start + length) if len(run) >= MIN_RUN]


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

