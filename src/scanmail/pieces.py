"""The pieces of a file that make an object to scan: from an offset, less some stretches.

The message in a spool file starts after its envelope (the offset); the stretches left out
are the well-formed base64 bodies the walker decoded exactly (mime.Explosion.cuts), which
the scanner sees decoded instead. Copies are made inside the kernel (sendfile).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

Cuts = Sequence[tuple[int, int]]


def pieces(offset: int, end: int, cuts: Cuts = ()) -> list[tuple[int, int]]:
    """(start, length) of each piece of [offset, end) outside the cuts (offsets from
    offset; sorted or not, overlapping or not)."""
    found = []
    pos = offset
    for start, stop in sorted((offset + a, offset + b) for a, b in cuts):
        if start > pos:
            found.append((pos, min(start, end) - pos))
        pos = max(pos, stop)
        if pos >= end:
            break
    if pos < end:
        found.append((pos, end - pos))
    return [(start, length) for start, length in found if length > 0]


def copy_pieces(source: int, target: int, parts: list[tuple[int, int]]) -> None:
    """The pieces of source appended to target, in order, inside the kernel."""
    for offset, size in parts:
        while size > 0:
            sent = os.sendfile(target, source, offset, size)
            if sent == 0:
                return  # the file shrank: what there is is scanned
            offset += sent
            size -= sent
