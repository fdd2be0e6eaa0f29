"""A message's parts: a streaming MIME walk that decodes each leaf into a private folder.

Python's email package holds a whole message in memory several times over (a 68 MB
message peaks near 400 MB); a gateway must take a 50 MB attachment on a small box, so
this walk reads line by line and writes each decoded part straight to a file.

Where a message is ambiguous (a broken encoding, an odd boundary, a duplicated header)
mail clients disagree about what it holds, and a virus can hide in the reading the
gateway did not make. So the walk notes every ambiguity, decodes such parts in every
common way (scanmail.decoders), and carves base64 runs out of the raw message whatever
its structure claims. Names are read by scanmail.names; archives by scanmail.archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from scanmail import archive, decoders, names

MAX_LINE = 1 << 20  # longer lines are read in pieces
MAX_HEADER_BLOCK = 1 << 20
READ_SIZE = 1 << 18
ALT_MAX = 1 << 20  # odd bodies up to this size get every lenient reading
CARVE_ALWAYS = 2 << 20  # messages up to this size are always carved for base64 runs
CARVE_MAX = 16 << 20  # ambiguous messages up to this size are carved (held in memory)
_FLUSH = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEXT_SNIFF = 1 << 16
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")
_ENCLOSED = re.compile(
    rb"^(begin)(?:-base64)?[ \t]+[0-7]{3,4}[ \t]|^(=ybegin) |(\(This file must be converted)",
    re.MULTILINE,
)
_UU_BEGIN = re.compile(rb"begin(-base64)?[ \t]++[0-7]{3,4}[ \t]++(\S[^\r\n]*+)")
_LONE_CR = re.compile(rb"\r(?!\n)")
_CARVE = re.compile(rb"(?:^[ \t]*[A-Za-z0-9+/]{4,}={0,2}[ \t]*\r?\n)+", re.MULTILINE)
_B64_ALLOWED = decoders.B64_ALPHABET + b"=\r\n \t"

UU_ENCODINGS = ("x-uuencode", "uuencode", "x-uue", "uue", "x-uu")
YENC_ENCODINGS = ("x-yencode", "yencode", "x-yenc", "yenc")
BINHEX_ENCODINGS = ("x-binhex", "binhex", "mac-binhex40", "x-binhex40", "binhex40")
IDENTITY = ("7bit", "8bit", "binary", "")
MESSAGE_TYPES = ("message/rfc822", "message/global")


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
    origin: str  # mime | alternate | carved | uuencode | zip | tnef
    names: list[str] = field(default_factory=list)
    path: Path | None = None  # the decoded bytes, for leaves
    size: int = 0
    head: bytes = field(default=b"", repr=False)  # the first bytes of the decoded data


@dataclass
class Explosion:
    """Everything a message decodes into, and what was odd about it."""

    parts: list[Part] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    header: bytes = b""  # the message's own header block

    @property
    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for part in self.parts:
            for name in part.names:
                seen.setdefault(name, None)
        return list(seen)


def safe_name(name: str, index: int) -> str:
    """A file name that is safe in the work folder: no separators, no dot files, short."""
    base = _SAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")[:80]
    return f"{index:04d}-{base or 'part'}"


class _Lines:
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


@dataclass(frozen=True)
class _Head:
    """What a part's headers say about its body."""

    ctype: str
    boundaries: frozenset[bytes]
    encodings: tuple[str, ...]
    odd: tuple[str, ...]

    @property
    def encoding(self) -> str:
        return self.encodings[0] if self.encodings else ""


def _head(header_block: bytes) -> _Head:
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
        with contextlib.suppress(Exception):
            if standard.get_boundary():
                boundaries.add(str(standard.get_boundary()))
        boundaries = {b.strip().strip("\"'") for b in boundaries if ";" not in b}
        if len(boundaries) > 1:
            odd.append("ambiguous boundary")
    encodings = tuple(dict.fromkeys(re.findall(r"[a-z0-9-]+", " ".join(ctes).lower())))
    known = ("base64", "quoted-printable", *UU_ENCODINGS, *YENC_ENCODINGS, *BINHEX_ENCODINGS,
             *IDENTITY)
    if len(encodings) > 1 or any(e not in known for e in encodings):
        odd.append(f"odd transfer encoding {' '.join(encodings)[:40]!r}")
    if main in ("application/mac-binhex40", "application/binhex") and not encodings:
        encodings = ("binhex",)
    return _Head(
        main, frozenset(b.encode("utf-8", "surrogateescape") for b in boundaries if b),
        encodings, tuple(odd),
    )


class _Sink:
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

    def feed(self, line: bytes) -> None:
        if self.encoding in ("base64", "quoted-printable"):
            self.buffer.append(line)
            self.buffered += len(line)
            # base64 can be cut anywhere (the ragged rest is carried); quoted-printable
            # at a line end, unless a hostile body has none
            if self.buffered >= _FLUSH and (self.encoding == "base64"
                                            or line.endswith((b"\n", b"\r"))
                                            or self.buffered >= 4 * _FLUSH):
                self._flush()
            return
        if self.encoding in UU_ENCODINGS:  # line by line: a block holds many lines
            for one in line.splitlines():
                if not one.startswith(b"begin"):
                    self._write(decoders.uu_line(one))
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
            chars = self.b64_rest + data.translate(None, decoders.B64_DELETE)
            usable = len(chars) if final else len(chars) - len(chars) % 4
            chars, self.b64_rest = chars[:usable], chars[usable:]
            self._write(decoders.b64(chars))
        else:
            if not self.odd and not decoders.is_plain_qp(data):
                self.odd = "odd quoted-printable"
            if final:
                data = data.rstrip(b"\r\n")
            self._write(decoders.qp_standard(data))

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
        else:
            lines = stripped.replace(b"\r", b"").replace(b" ", b"").replace(b"\t", b"")
            lengths = set(map(len, lines.split(b"\n")[:-1]))
            if 0 in lengths:
                self.odd = "blank line inside base64"
            elif any(n % 4 for n in lengths):  # every encoder writes lines of whole quads
                self.odd = "ragged base64 lines"
        self.pad_seen = self.pad_seen or stripped.endswith(b"=")

    def _write(self, data: bytes) -> None:
        if data:
            self.charge(len(data))
            self.out.write(data)
            self.size += len(data)
            if len(self.head) < _TEXT_SNIFF:
                self.head += data[: _TEXT_SNIFF - len(self.head)]

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
        self.top: _Lines | None = None
        self.plain_base64: list[tuple[int, int]] = []  # well-formed base64 bodies (offsets)

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

    def add_decoded(self, parent: Part, data: bytes, origin: str) -> Part:
        """A further reading of a part's body, as a part of its own."""
        part = self.new_part(parent.depth, parent.content_type, origin, list(parent.names))
        self.fill(part, data)
        return part

    def fill(self, part: Part, data: bytes) -> None:
        """Write a part's decoded bytes into the work folder, then look inside them."""
        self.charge(len(data))
        path = self.new_file(part)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        part.size = len(data)
        part.head = data[:_TEXT_SNIFF]
        self.after_leaf(part)

    # -- MIME ---------------------------------------------------------------------
    def walk(self, source: BinaryIO, depth: int = 0) -> Explosion:
        lines = _Lines(source)
        self.top = lines
        self.entity(lines, [], depth, "text/plain")
        if depth == 0:
            self.carve(lines)
        return self.result

    def entity(
        self, lines: _Lines, bounds: list[frozenset[bytes]], depth: int, default: str
    ) -> bytes | None:
        """Read one entity (headers and body); return the boundary line that ended it."""
        header, ended = self.headers(lines, bounds)
        if not self.result.parts:
            self.result.header = header
        head = _head(header)
        self.result.defects.extend(head.odd)
        ctype = head.ctype or default
        part = self.new_part(depth, ctype, "mime", names.names_from_headers(header))
        if ended is not None:
            return ended
        if ctype.startswith("multipart/") and head.boundaries:
            return self.multipart(lines, bounds, depth, ctype, head.boundaries)
        if ctype in MESSAGE_TYPES and head.encoding in IDENTITY:
            return self.entity(lines, bounds, depth + 1, "text/plain")
        start = lines.offset
        ended, end, odd = self.leaf(lines, bounds, part, head.encoding)
        if lines is self.top and head.encoding == "base64" and not odd and not head.odd:
            self.plain_base64.append((start, end))  # carving would only find this again
        if odd or head.odd or head.encoding in (*UU_ENCODINGS, *YENC_ENCODINGS,
                                                  *BINHEX_ENCODINGS):
            if odd:
                self.result.defects.append(odd)
            self.alternates(part, lines, start, end, head.encodings)
        self.after_leaf(part, encapsulated=ctype in MESSAGE_TYPES)
        return ended

    def headers(self, lines: _Lines, bounds: list[frozenset[bytes]]) -> tuple[bytes, bytes | None]:
        block: list[bytes] = []
        size = 0
        while True:
            line, bol = lines.next()
            if not line:
                return b"".join(block), b""
            if bol and _boundary(line, bounds) is not None:
                return b"".join(block), line
            if bol and line in (b"\n", b"\r\n", b"\r"):
                return b"".join(block), None
            if not block and line.startswith(b"From "):
                continue  # an mbox "From " line, not a header (Python skips it too)
            size += len(line)
            is_header = not bol or bool(_HEADER_LINE.match(line))
            if size > MAX_HEADER_BLOCK:  # clients read on; a header this long is hostile
                raise LimitExceeded(f"header block over {MAX_HEADER_BLOCK} bytes")
            if not is_header:
                if block:
                    self.result.defects.append("header block without separator")
                lines.push(line)  # the body starts here
                return b"".join(block), None
            block.append(line)

    def multipart(
        self, lines: _Lines, bounds: list[frozenset[bytes]], depth: int, ctype: str,
        boundaries: frozenset[bytes],
    ) -> bytes | None:
        inner = [*bounds, boundaries]
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        ended = self.skip_to_boundary(lines, inner)  # the preamble
        while True:
            if not ended:
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

    def skip_to_boundary(self, lines: _Lines, bounds: list[frozenset[bytes]]) -> bytes | None:
        while True:
            line, bol = lines.next()
            if not line:
                return b"" if bounds else None
            if bol and _boundary(line, bounds) is not None:
                return line

    def leaf(
        self, lines: _Lines, bounds: list[frozenset[bytes]], part: Part, encoding: str
    ) -> tuple[bytes | None, int, str]:
        """Decode a leaf body; return what ended it, where the body ends, and any oddity."""
        sink = _Sink(self.new_file(part), encoding, self.charge)
        ended: bytes | None = None
        try:
            while True:
                block = lines.block()
                if block:
                    sink.feed(block)
                    continue
                line, bol = lines.next()
                if not line:
                    ended = b"" if bounds else None
                    end = lines.offset
                    break
                if bol and line.startswith(b"--") and _boundary(line, bounds) is not None:
                    ended, end = line, lines.offset - len(line)  # the body ends before it
                    break
                sink.feed(line)
        finally:
            part.size = sink.close()
            part.head = sink.head
        return ended, end, sink.odd

    # -- every reading of an ambiguous body -------------------------------------------
    def alternates(
        self, part: Part, lines: _Lines, start: int, end: int, encodings: tuple[str, ...]
    ) -> None:
        """Decode an odd body in every common way; keep the readings that differ."""
        if end - start > ALT_MAX:
            self.result.defects.append(f"part {part.index}: too large for lenient readings")
            return
        raw = lines.read_raw(start, end)
        seen = {_digest_file(part.path)} if part.path else set()
        for data in _readings(raw, encodings):
            digest = hashlib.md5(data).digest()
            if digest not in seen:
                seen.add(digest)
                self.add_decoded(part, data, "alternate")

    def carve(self, lines: _Lines) -> None:
        """Base64 runs anywhere in the raw message, whatever its structure says."""
        size = lines.offset
        if size > CARVE_MAX or (size > CARVE_ALWAYS and not self.result.defects):
            return
        raw = lines.read_raw(0, size)
        if _LONE_CR.search(raw):
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            plain: list[tuple[int, int]] = []  # offsets no longer match the stream's
        else:
            plain = self.plain_base64
        runs = [m.group() for gap_start, gap_end in _gaps(plain, len(raw))
                for m in _CARVE.finditer(raw, gap_start, gap_end) if m.end() - m.start() >= 16]
        if not runs:
            return
        seen = {_digest_file(p.path) for p in self.result.parts if p.path is not None}
        holder = Part(-1, 0, "application/octet-stream", "carved")
        for run in runs:
            for reading in (decoders.b64_skip_junk, decoders.b64_restart_at_pad):
                data = reading(run)
                digest = hashlib.md5(data).digest()
                if len(data) >= 8 and digest not in seen:
                    seen.add(digest)
                    self.add_decoded(holder, data, "carved")

    # -- what a decoded leaf holds --------------------------------------------------
    def after_leaf(self, part: Part, encapsulated: bool = False) -> None:
        """Look inside a decoded leaf: an encoded message, uuencode, archives."""
        if part.path is None:
            return
        if encapsulated:  # message/rfc822 sent base64 or quoted-printable
            with open(part.path, "rb") as inner:
                self.entity(_Lines(inner), [], part.depth + 1, "text/plain")
            return
        head = part.head
        if len(head) < min(part.size, _TEXT_SNIFF):
            with open(part.path, "rb") as handle:
                head = handle.read(_TEXT_SNIFF)
        # Clients decode uuencode, yEnc and BinHex found in text bodies.
        whole = part.size <= len(head)
        text = part.content_type.startswith("text/")
        markers = _markers(part.path) if text and not whole else _enclosed(head)
        if b"begin" in markers:
            self.uudecode(part)
        if part.size <= ALT_MAX and markers & {b"=ybegin", b"(This file must be converted"}:
            body = part.path.read_bytes()
            for decoded in (decoders.ydecode(body), decoders.binhex_decode(body)):
                if decoded:
                    self.add_decoded(part, decoded, "alternate")
        archive.look_inside(self, part, head)

    def uudecode(self, part: Part) -> None:
        """Files uuencoded inside a text body ('begin MODE NAME' ... 'end')."""
        assert part.path is not None
        with open(part.path, "rb") as handle:
            current: _Sink | None = None
            current_part: Part | None = None
            for line in iter(lambda: handle.readline(MAX_LINE), b""):
                if current is None:
                    match = _UU_BEGIN.match(line)
                    if match:
                        name = match.group(2).rstrip().decode("utf-8", "replace")
                        current_part = self.new_part(
                            part.depth + 1, "application/octet-stream", "uuencode", [name]
                        )
                        encoding = "base64" if match.group(1) else "x-uuencode"
                        current = _Sink(self.new_file(current_part), encoding, self.charge)
                    continue
                if line.strip() in (b"end", b"===="):
                    assert current_part is not None
                    current_part.size = current.close()
                    self.after_leaf(current_part)
                    current = current_part = None
                    continue
                current.feed(line)
            if current is not None and current_part is not None:
                current_part.size = current.close()
                self.after_leaf(current_part)


def _readings(raw: bytes, encodings: tuple[str, ...]) -> Iterator[bytes]:
    """Every reading of a raw body under each encoding its header names, and stacked."""
    tried = [e for e in encodings if e not in IDENTITY] or ["base64", "quoted-printable"]
    for encoding in tried:
        if encoding in ("base64", "quoted-printable"):
            yield from decoders.readings(raw, encoding)
        elif encoding in UU_ENCODINGS:
            yield decoders.uudecode(raw)
        elif encoding in YENC_ENCODINGS:
            yield decoders.ydecode(raw)
        elif encoding in BINHEX_ENCODINGS:
            yield decoders.binhex_decode(raw)
        else:  # an encoding no one knows: try the common ones
            yield from decoders.readings(raw, "base64")
            yield from decoders.readings(raw, "quoted-printable")
    if "base64" in tried and "quoted-printable" in tried:
        yield from decoders.readings(decoders.qp_standard(raw), "base64")
        yield decoders.qp_standard(decoders.b64_skip_junk(raw))


def _gaps(ranges: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """The stretches of [0, size) outside the given (sorted, disjoint) ranges."""
    pos = 0
    for start, end in sorted(ranges):
        if start > pos:
            yield pos, start
        pos = max(pos, end)
    if pos < size:
        yield pos, size


def _enclosed(data: bytes) -> set[bytes]:
    if b"begin" not in data and b"(This file must" not in data:
        return set()  # the common case, found at memchr speed
    return {m.group(m.lastindex or 0) for m in _ENCLOSED.finditer(data)}


def _markers(path: Path) -> set[bytes]:
    """Which enclosed encodings (uuencode, yEnc, BinHex) a text body seems to hold."""
    found: set[bytes] = set()
    with open(path, "rb") as handle:
        tail = b""
        while chunk := handle.read(1 << 20):
            found.update(_enclosed(tail + chunk))
            tail = chunk[-64:]
    return found


def _line_end(buf: bytes, pos: int, eof: bool) -> int:
    """Where the line starting at pos ends (after CRLF, LF or a lone CR); 0 if not yet known."""
    nl = buf.find(b"\n", pos)
    cr = buf.find(b"\r", pos, nl if nl >= 0 else len(buf))
    if cr >= 0 and cr + 1 != nl:
        if cr + 1 == len(buf) and not eof:
            return 0  # a CR at the end of what was read: an LF may follow
        return cr + 1
    return nl + 1 if nl >= 0 else 0


def _digest_file(path: Path | None) -> bytes:
    digest = hashlib.md5()
    if path is not None:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.digest()


def _boundary(line: bytes, bounds: list[frozenset[bytes]]) -> tuple[int, bool] | None:
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


def explode(source: BinaryIO, workdir: Path, limits: Limits) -> Explosion:
    """Walk a message, decoding every leaf into workdir; raise LimitExceeded past limits."""
    return Walker(workdir, limits).walk(source)
