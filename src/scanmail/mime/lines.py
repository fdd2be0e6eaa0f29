"""Lines of a message file, split as mail clients split them, with their offsets."""

from __future__ import annotations

import os
from typing import BinaryIO

MAX_LINE = 1 << 20  # longer lines are read in pieces
READ_SIZE = 1 << 18


class Lines:
    """Lines of a file, split at CRLF, LF or a lone CR (as mail clients do), with offsets."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.fd = source.fileno()
        self.base = source.tell()
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.offset = 0  # where the next line starts, from base
        self.pushed: bytes | None = None
        self.bol = True

    def next(self) -> tuple[bytes, bool]:
        """The next line with its ending, and whether it starts at the beginning of a line."""
        if self.pushed is not None:
            line, self.pushed = self.pushed, None
            self.offset += len(line)
            self.bol = True
            return line, True
        while True:
            end = _line_end(self.buf, self.pos, self.eof)
            if end:
                break
            if len(self.buf) - self.pos >= MAX_LINE or self.eof:
                end = min(len(self.buf), self.pos + MAX_LINE)
                break
            self._read()
        line = self.buf[self.pos : end]
        self.pos = end
        self.offset += len(line)
        bol = self.bol
        self.bol = line.endswith((b"\n", b"\r"))
        return line, bol

    def block(self) -> bytes:
        """Whole lines up to the next line that starts with '--' (a boundary candidate).

        Leaf bodies are read this way, in large blocks rather than line by line: a
        boundary can only be a line that starts with two dashes.
        """
        if self.pushed is not None or not self.bol:
            return b""
        while True:
            buf, pos = self.buf, self.pos
            if len(buf) - pos < 2 and not self.eof:
                self._read()
                continue
            if pos >= len(buf) or buf.startswith(b"--", pos):
                return b""
            dash = buf.find(b"\n--", pos)
            cr_dash = buf.find(b"\r--", pos, dash if dash >= 0 else len(buf))  # a bare CR
            dash = cr_dash if cr_dash >= 0 else dash
            if dash >= 0:
                end = dash + 1
            else:
                last = max(buf.rfind(b"\n", pos), buf.rfind(b"\r", pos))
                if last == len(buf) - 1 and buf[last] == 13 and not self.eof:
                    last = max(buf.rfind(b"\n", pos, last), buf.rfind(b"\r", pos, last))
                if last < pos and len(buf) - pos >= MAX_LINE:
                    return b""  # a line this long is read by next(), in pieces
                if last < pos or (not self.eof and len(buf) - pos < READ_SIZE):
                    if self.eof:
                        return b""
                    self._read()
                    continue
                end = last + 1
            block = buf[pos:end]
            self.pos = end
            self.offset += len(block)
            return block

    def _read(self) -> None:
        chunk = self.source.read(READ_SIZE)
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk

    def push(self, line: bytes) -> None:
        self.pushed = line
        self.offset -= len(line)

    def read_raw(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of this stream, read again from the file."""
        return os.pread(self.fd, end - start, self.base + start)


def _line_end(buf: bytes, pos: int, eof: bool) -> int:
    """Where the line starting at pos ends (after CRLF, LF or a lone CR); 0 if not yet known."""
    nl = buf.find(b"\n", pos)
    cr = buf.find(b"\r", pos, nl if nl >= 0 else len(buf))
    if cr >= 0 and cr + 1 != nl:
        if cr + 1 == len(buf) and not eof:
            return 0  # a CR at the end of what was read: an LF may follow
        return cr + 1
    return nl + 1 if nl >= 0 else 0
