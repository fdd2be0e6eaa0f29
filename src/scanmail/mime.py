"""A message's parts: a streaming MIME walk that decodes each leaf into a private folder.

Python's email package holds a whole message in memory several times over (a 68 MB
message peaks near 400 MB); a gateway must take a 50 MB attachment on a small box, so
this walk reads line by line and writes each decoded part straight to a file. Names are
read by scanmail.names; archive members (zip, TNEF) by scanmail.archive.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from scanmail import archive, names

MAX_LINE = 1 << 20  # longer lines are read in pieces
MAX_HEADER_BLOCK = 1 << 20
_FLUSH = 1 << 20
_B64_DELETE = bytes(c for c in range(256) if chr(c) not in
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEXT_SNIFF = 1 << 16
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")


class LimitExceeded(Exception):
    """The message is past a decoding limit; it cannot be checked."""


@dataclass(frozen=True)
class Limits:
    """How far decoding may go for one message."""

    max_bytes: int = 200 << 20
    max_parts: int = 1000
    max_depth: int = 20


@dataclass
class Part:
    """One entity of the message tree, or a member found inside one."""

    index: int
    depth: int
    content_type: str
    origin: str  # mime | uuencode | zip | tnef
    names: list[str] = field(default_factory=list)
    path: Path | None = None  # the decoded bytes, for leaves
    size: int = 0


@dataclass
class Explosion:
    """Everything a message decodes into."""

    parts: list[Part] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for part in self.parts:
            for name in part.names:
                seen.setdefault(name, None)
        return list(seen)

    @property
    def files(self) -> list[Path]:
        return [part.path for part in self.parts if part.path is not None]


def safe_name(name: str, index: int) -> str:
    """A file name that is safe in the work folder: no separators, no dot files, short."""
    base = _SAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")[:80]
    return f"{index:04d}-{base or 'part'}"


class _Lines:
    """Lines of a stream with one line of push-back; a long line comes in pieces."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.pushed: bytes | None = None
        self.bol = True  # is the next line at the beginning of a line?

    def next(self) -> tuple[bytes, bool]:
        if self.pushed is not None:
            line, self.pushed = self.pushed, None
            bol = True
        else:
            line = self.source.readline(MAX_LINE)
            bol = self.bol
        self.bol = line.endswith(b"\n")
        return line, bol

    def push(self, line: bytes) -> None:
        self.pushed = line
        self.bol = True


def _content_type(header_block: bytes) -> tuple[str, str, str]:
    """(type/subtype, boundary, transfer encoding), read the way Python's email does."""
    values = names.header_values(header_block)
    ctype = next((v for k, v in values if k == "content-type"), "")
    cte = next((v for k, v in values if k == "content-transfer-encoding"), "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main.count("/") != 1:
        main = ""
    boundary = ""
    match = re.search(r"""(?i)(?:^|;)\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))""", ctype)
    if match:
        boundary = match.group(1) if match.group(1) is not None else match.group(2)
    return main, boundary, cte.strip().lower().split(";")[0].strip()


class _Sink:
    """Decodes a leaf's body lines into a file, within the byte budget."""

    def __init__(self, path: Path, encoding: str, charge: Callable[[int], None]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.out = os.fdopen(fd, "wb")
        self.encoding = encoding
        self.charge = charge
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.b64_rest = b""
        self.pending_eol = b""
        self.size = 0

    def feed(self, line: bytes, bol: bool) -> None:
        if self.encoding in ("base64", "quoted-printable"):
            self.buffer.append(line)
            self.buffered += len(line)
            if self.buffered >= _FLUSH and line.endswith(b"\n"):
                self._flush()
            return
        # Identity: the line end before a boundary belongs to the boundary (RFC 2046 5.1.1).
        if self.pending_eol:
            self._write(self.pending_eol)
        body = line.rstrip(b"\r\n")
        self.pending_eol = line[len(body):]
        self._write(body)

    def _flush(self, final: bool = False) -> None:
        data = b"".join(self.buffer)
        self.buffer, self.buffered = [], 0
        if self.encoding == "base64":
            # Lenient like most clients: skip junk and padding, decode what is left.
            chars = self.b64_rest + data.translate(None, _B64_DELETE)
            usable = len(chars) if final else len(chars) - len(chars) % 4
            chars, self.b64_rest = chars[:usable], chars[usable:]
            if final and len(chars) % 4 == 1:
                chars = chars[:-1]
            if chars:
                self._write(binascii.a2b_base64(chars + b"=" * (-len(chars) % 4)))
        else:
            if final:
                data = data.rstrip(b"\r\n")
            self._write(binascii.a2b_qp(data))

    def _write(self, data: bytes) -> None:
        if data:
            self.charge(len(data))
            self.out.write(data)
            self.size += len(data)

    def close(self) -> int:
        try:
            if self.encoding in ("base64", "quoted-printable"):
                self._flush(final=True)
        finally:
            self.out.close()
        return self.size


class Walker:
    """One message's walk: the tree of entities, decoded leaves, limits."""

    def __init__(self, workdir: Path, limits: Limits) -> None:
        self.workdir = workdir
        self.limits = limits
        self.result = Explosion()
        self.decoded = 0

    # -- budget -----------------------------------------------------------------
    def charge(self, size: int) -> None:
        self.decoded += size
        if self.decoded > self.limits.max_bytes:
            raise LimitExceeded(f"decoded size over {self.limits.max_bytes} bytes")

    def new_part(self, depth: int, content_type: str, origin: str, part_names: list[str]) -> Part:
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"nesting deeper than {self.limits.max_depth}")
        if len(self.result.parts) >= self.limits.max_parts:
            raise LimitExceeded(f"more than {self.limits.max_parts} parts")
        part = Part(len(self.result.parts), depth, content_type, origin, part_names)
        self.result.parts.append(part)
        return part

    def new_file(self, part: Part) -> Path:
        path = self.workdir / safe_name(part.names[0] if part.names else "", part.index)
        part.path = path
        return path

    # -- MIME ---------------------------------------------------------------------
    def walk(self, source: BinaryIO, depth: int = 0) -> Explosion:
        lines = _Lines(source)
        self.entity(lines, [], depth, "text/plain")
        return self.result

    def entity(self, lines: _Lines, bounds: list[bytes], depth: int, default: str) -> bytes | None:
        """Read one entity (headers and body); return the boundary line that ended it."""
        header, ended = self.headers(lines, bounds)
        ctype, boundary, cte = _content_type(header)
        ctype = ctype or default
        part = self.new_part(depth, ctype, "mime", names.names_from_headers(header))
        if ended is not None:
            return ended
        if ctype.startswith("multipart/") and boundary:
            return self.multipart(lines, bounds, depth, ctype, boundary.encode("utf-8", "replace"))
        if ctype == "message/rfc822" and cte in ("", "7bit", "8bit", "binary"):
            return self.entity(lines, bounds, depth + 1, "text/plain")
        ended = self.leaf(lines, bounds, part, cte)
        self.after_leaf(part, encapsulated=ctype == "message/rfc822")
        return ended

    def headers(self, lines: _Lines, bounds: list[bytes]) -> tuple[bytes, bytes | None]:
        block: list[bytes] = []
        size = 0
        while True:
            line, bol = lines.next()
            if not line:
                return b"".join(block), b""
            if bol and _boundary(line, bounds) is not None:
                return b"".join(block), line
            if bol and line in (b"\n", b"\r\n"):
                return b"".join(block), None
            if not block and line.startswith(b"From "):
                continue  # an mbox "From " line, not a header (Python skips it too)
            size += len(line)
            is_header = not bol or bool(_HEADER_LINE.match(line))
            if not is_header or size > MAX_HEADER_BLOCK:
                if block:
                    self.result.defects.append("header block without separator")
                lines.push(line)  # the body starts here
                return b"".join(block), None
            block.append(line)

    def multipart(
        self, lines: _Lines, bounds: list[bytes], depth: int, ctype: str, boundary: bytes
    ) -> bytes | None:
        inner = [*bounds, boundary]
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        ended = self.skip_to_boundary(lines, inner)  # the preamble
        while True:
            if ended is None or ended == b"":
                self.result.defects.append("multipart without close delimiter")
                return ended
            which = _boundary(ended, inner)
            assert which is not None
            level, closing = which
            if level < len(inner) - 1:
                return ended  # an enclosing boundary ends this multipart too
            if closing:
                return self.skip_to_boundary(lines, bounds)  # the epilogue
            ended = self.entity(lines, inner, depth + 1, child_default)

    def skip_to_boundary(self, lines: _Lines, bounds: list[bytes]) -> bytes | None:
        while True:
            line, bol = lines.next()
            if not line:
                return b"" if bounds else None
            if bol and _boundary(line, bounds) is not None:
                return line

    def leaf(self, lines: _Lines, bounds: list[bytes], part: Part, cte: str) -> bytes | None:
        encoding = cte if cte in ("base64", "quoted-printable") else "identity"
        sink = _Sink(self.new_file(part), encoding, self.charge)
        try:
            while True:
                line, bol = lines.next()
                if not line:
                    return b"" if bounds else None
                if bol and line.startswith(b"--") and _boundary(line, bounds) is not None:
                    return line
                sink.feed(line, bol)
        finally:
            part.size = sink.close()

    # -- what a decoded leaf holds --------------------------------------------------
    def after_leaf(self, part: Part, encapsulated: bool = False) -> None:
        """Look inside a decoded leaf: an encoded message, uuencode, archives."""
        if part.path is None:
            return
        if encapsulated:  # message/rfc822 sent base64 or quoted-printable
            with open(part.path, "rb") as inner:
                self.entity(_Lines(inner), [], part.depth + 1, "text/plain")
            return
        with open(part.path, "rb") as handle:
            head = handle.read(_TEXT_SNIFF)
        if b"begin" in head or part.content_type.startswith("text/"):
            self.uudecode(part)
        archive.look_inside(self, part, head)

    def uudecode(self, part: Part) -> None:
        assert part.path is not None
        with open(part.path, "rb") as handle:
            current: _Sink | None = None
            current_part: Part | None = None
            for line in iter(lambda: handle.readline(MAX_LINE), b""):
                if current is None:
                    match = re.match(rb"begin(-base64)?\s+[0-7]{3,4}\s+(.+?)\s*$", line)
                    if match:
                        name = match.group(2).decode("utf-8", "replace")
                        current_part = self.new_part(
                            part.depth + 1, "application/octet-stream", "uuencode", [name]
                        )
                        encoding = "base64" if match.group(1) else "uuencode"
                        current = _UuSink(self.new_file(current_part), encoding, self.charge)
                    continue
                if line.strip() in (b"end", b"===="):
                    assert current_part is not None
                    current_part.size = current.close()
                    self.after_leaf(current_part)
                    current = current_part = None
                    continue
                current.feed(line, True)
            if current is not None and current_part is not None:
                current_part.size = current.close()
                self.after_leaf(current_part)


class _UuSink(_Sink):
    """A uuencode (or begin-base64) block."""

    def feed(self, line: bytes, bol: bool) -> None:
        if self.encoding == "base64":
            super().feed(line, bol)
            return
        data = line.rstrip(b"\r\n")
        if not data:
            return
        try:
            self._write(binascii.a2b_uu(data))
        except binascii.Error:
            # Some encoders pad short lines wrongly; decode by the length byte alone.
            length = (data[0] - 32) & 63
            with contextlib.suppress(binascii.Error):
                self._write(binascii.a2b_uu(data[: 1 + (length + 2) // 3 * 4])[:length])


def _boundary(line: bytes, bounds: list[bytes]) -> tuple[int, bool] | None:
    """(level, closing) if line is a delimiter of one of bounds, innermost first."""
    if not line.startswith(b"--") or not bounds:
        return None
    text = line.rstrip()
    for level in range(len(bounds) - 1, -1, -1):
        delimiter = b"--" + bounds[level]
        if text == delimiter:
            return level, False
        if text == delimiter + b"--":
            return level, True
    return None


def explode(source: BinaryIO, workdir: Path, limits: Limits) -> Explosion:
    """Walk a message, decoding every leaf into workdir; raise LimitExceeded past limits."""
    return Walker(workdir, limits).walk(source)
