"""A message's parts: a streaming MIME walk that decodes each leaf into a private folder.

Python's email package holds a whole message in memory several times over (a 68 MB
message peaks near 400 MB); a gateway must take a 50 MB attachment on a small box, so
this walk reads line by line and writes each decoded part straight to a file.

Where a message is ambiguous (a broken encoding, an odd boundary, a duplicated header)
mail clients disagree about what it holds, and a virus can hide in the reading the
gateway did not make. So the walk notes every ambiguity, decodes such parts in every
common way (scanmail.mime.readings), and carves base64 runs out of the raw message whatever
its structure claims (scanmail.mime.carve). Names are read by scanmail.mime.names; archives
by scanmail.mime.archives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scanmail.mime import archives, cuts, enclosed, names, readings
from scanmail.mime.body import TEXT_SNIFF, Body
from scanmail.mime.carve import base64_runs
from scanmail.mime.headers import (
    BINHEX_ENCODINGS,
    IDENTITY,
    MESSAGE_TYPES,
    UU_ENCODINGS,
    YENC_ENCODINGS,
    match_boundary,
    read_head,
)
from scanmail.mime.lines import MAX_LINE, Lines
from scanmail.mime.part import Explosion, LimitExceeded, Limits, Part, safe_name

MAX_HEADER_BLOCK = 1 << 20
MAX_NAMES = 5000  # distinct attachment names per message (issue 14): past it, unchecked
ALT_MAX = 1 << 20  # odd bodies up to this size get every lenient reading
CARVE_ALWAYS = 2 << 20  # messages up to this size are always carved for base64 runs
CARVE_MAX = 16 << 20  # ambiguous messages up to this size are carved (held in memory)
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")
_UU_BEGIN = re.compile(rb"begin(-base64)?[ \t]++[0-7]{3,4}[ \t]++(\S[^\r\n]*+)")
# ClamAV unpacks these itself, in the raw message and in the decoded container, so a
# member of one is written (and scanned again, and walked) only if it is a container in
# turn; it is still decoded, to charge the limits. Members of the others (lzh, zst, UDF,
# disk images) are always written: this copy is the only one that is ever scanned.
CLAMAV_UNPACKS = frozenset({"zip", "rar", "7z", "arj", "cab", "cpio", "iso", "tar", "tar.gz",
                            "tar.bz2", "tar.xz", "gz", "bz2", "xz"})


class Walker:
    """One message's walk: the tree of entities, decoded leaves, limits."""

    def __init__(self, workdir: Path, limits: Limits) -> None:
        self.workdir = workdir
        self.limits = limits
        self.result = Explosion()
        self.decoded = 0
        self.top: Lines | None = None
        self.plain_base64: list[tuple[int, int]] = []  # well-formed base64 bodies (offsets)
        self.names_seen: set[str] = set()  # bounded (issue 14): the record and event keep all
        self.cuttable = True  # no header block that readers end in different places

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
        self.names_seen.update(part_names)
        if len(self.names_seen) > MAX_NAMES:
            raise LimitExceeded(f"more than {MAX_NAMES} attachment names")
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
        with self.create(part) as out:
            out.write(data)
        part.size = len(data)
        part.head = data[:TEXT_SNIFF]
        self.after_leaf(part)

    def copy(self, part: Part, chunks: Iterator[bytes], declared: int, keep: bool = True) -> None:
        """Write an archive member into the work folder as it is read, then look inside.

        Unless kept, a member is only decoded (its bytes charged), unless its first bytes
        show a container, which is written and walked all the same.
        """
        self.charge(declared)
        first = next(chunks, b"")
        copied = len(first)
        if copied > declared:  # a lying header: charge what comes
            self.charge(copied - declared)
        if not (keep or archives.is_container(first)):
            for chunk in chunks:
                copied += len(chunk)
                if copied > declared:
                    self.charge(min(len(chunk), copied - declared))
            part.size = copied
            return
        with self.create(part) as out:
            out.write(first)
            for chunk in chunks:
                copied += len(chunk)
                if copied > declared:
                    self.charge(min(len(chunk), copied - declared))
                out.write(chunk)
        part.size = copied
        self.after_leaf(part)

    def create(self, part: Part) -> BinaryIO:
        """A new file for a part's bytes, never one that exists, never through a link."""
        path = self.new_file(part)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "wb")

    def open_members(self, part: Part, head: bytes) -> None:
        """The members of a container part, each a part of its own (walked in turn).

        Every member is decoded; those ClamAV cannot see otherwise are written and scanned
        (see CLAMAV_UNPACKS); each is named by its path from the attachment down
        (invoice.iso/files/setup.exe) and by its own name, so patterns anchored at either
        end still match.
        """
        assert part.path is not None
        parent = part.names[0] if part.names else f"part{part.index}"
        reader = archives.members(
            part.path, part.size, head, name=parent,
            scratch=self.workdir / f"{part.index:04d}~x",  # safe_name never makes a '~'
            budget=max(0, self.limits.max_bytes - self.decoded),
        )
        try:
            with contextlib.closing(reader):
                for member in reader:
                    member_names = _member_names(parent, member.names)
                    if member.encrypted:
                        self.result.encrypted.append(member_names[0] if member_names
                                                     else parent)
                        if not member_names:
                            continue  # headers encrypted: the container's name is all
                    child = self.new_part(part.depth + 1, "application/octet-stream",
                                          member.origin, member_names)
                    try:
                        if member.data is not None:
                            self.fill(child, member.data)
                        elif member.chunks is not None:
                            self.copy(child, member.chunks(), member.size,
                                      keep=member.origin not in CLAMAV_UNPACKS)
                    except archives.ArchiveError as exc:  # this member only: list the rest
                        self.result.defects.append(f"{exc.kind} {part.index}: {exc.problem}")
        except archives.ArchiveError as exc:
            self.result.defects.append(f"{exc.kind} {part.index}: {exc.problem}")

    # -- MIME ---------------------------------------------------------------------
    def walk(self, source: BinaryIO, depth: int = 0) -> Explosion:
        lines = Lines(source)
        self.top = lines
        self.entity(lines, [], depth, "text/plain")
        if depth == 0:
            self.carve(lines)
        found = self.result.cuts
        if found and (self.result.defects or not self.cuttable
                      or not cuts.read_alike_outside(lines.read_raw, lines.offset, found)):
            found.clear()  # read one way here, perhaps another by clamd
        return self.result

    def entity(
        self, lines: Lines, bounds: list[frozenset[bytes]], depth: int, default: str
    ) -> bytes | None:
        """Read one entity (headers and body); return the boundary line that ended it."""
        header, ended = self.headers(lines, bounds)
        if not self.result.parts:
            self.result.header = header
        head = read_head(header)
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
        ended, end, odd, exact = self.leaf(lines, bounds, part, head.encoding)
        if lines is self.top and head.encoding == "base64" and not odd and not head.odd:
            self.plain_base64.append((start, end))  # carving would only find this again
            if (exact and part.size and cuts.worth_cutting(ctype, end - start)
                    and (cut := cuts.past_first_line(lines.read_raw, start, end))):
                self.result.cuts.append(cut)  # clamd sees it decoded (mime.cuts)
        if odd or head.odd or head.encoding in (*UU_ENCODINGS, *YENC_ENCODINGS,
                                                  *BINHEX_ENCODINGS):
            if odd:
                self.result.defects.append(odd)
            self.alternates(part, lines, start, end, head.encodings, bool(odd or head.odd))
        self.after_leaf(part, encapsulated=ctype in MESSAGE_TYPES)
        return ended

    def headers(self, lines: Lines, bounds: list[frozenset[bytes]]) -> tuple[bytes, bytes | None]:
        block: list[bytes] = []
        size = 0
        while True:
            line, bol = lines.next()
            if not line:
                return b"".join(block), b""
            if bol and match_boundary(line, bounds) is not None:
                return b"".join(block), line
            if bol and line in (b"\n", b"\r\n", b"\r"):
                return b"".join(block), None
            if not block and line.startswith(b"From "):
                continue  # an mbox "From " line, not a header (Python skips it too)
            size += len(line)
            is_header = not bol or bool(_HEADER_LINE.match(line))
            if bol and block and not line.strip():
                # A continuation here, the end of the headers to ClamAV and some clients.
                self.cuttable = False
            if size > MAX_HEADER_BLOCK:  # clients read on; a header this long is hostile
                raise LimitExceeded(f"header block over {MAX_HEADER_BLOCK} bytes")
            if not is_header:
                if block:
                    self.result.defects.append("header block without separator")
                lines.push(line)  # the body starts here
                return b"".join(block), None
            block.append(line)

    def multipart(
        self, lines: Lines, bounds: list[frozenset[bytes]], depth: int, ctype: str,
        boundaries: frozenset[bytes],
    ) -> bytes | None:
        inner = [*bounds, boundaries]
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        ended = self.skip_to_boundary(lines, inner)  # the preamble
        while True:
            if not ended:
                self.result.defects.append("multipart without close delimiter")
                return ended
            which = match_boundary(ended, inner)
            assert which is not None
            level, closing = which
            if level < len(inner) - 1:
                return ended  # an enclosing boundary ends this multipart too
            if closing:
                return self.skip_to_boundary(lines, bounds)  # the epilogue
            ended = self.entity(lines, inner, depth + 1, child_default)

    def skip_to_boundary(self, lines: Lines, bounds: list[frozenset[bytes]]) -> bytes | None:
        while True:
            line, bol = lines.next()
            if not line:
                return b"" if bounds else None
            if bol and match_boundary(line, bounds) is not None:
                return line

    def leaf(
        self, lines: Lines, bounds: list[frozenset[bytes]], part: Part, encoding: str
    ) -> tuple[bytes | None, int, str, bool]:
        """Decode a leaf body; return what ended it, where the body ends, any oddity, and
        whether its decoded file holds it exactly (Body.exact)."""
        sink = Body(self.new_file(part), encoding, self.charge)
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
                if bol and line.startswith(b"--") and match_boundary(line, bounds) is not None:
                    ended, end = line, lines.offset - len(line)  # the body ends before it
                    break
                sink.feed(line)
        finally:
            part.size = sink.close()
            part.head = sink.head
        return ended, end, sink.odd, sink.exact

    # -- every reading of an ambiguous body -------------------------------------------
    def alternates(
        self, part: Part, lines: Lines, start: int, end: int, encodings: tuple[str, ...],
        odd: bool = True,
    ) -> None:
        """Decode an odd body in every common way; keep the readings that differ."""
        if end - start > ALT_MAX and not odd:  # a plain uuencode, yEnc or BinHex body
            self.result.defects.append(f"part {part.index}: too large for lenient readings")
            return
        if end - start > ALT_MAX:
            # Padding a hiding body past the cap must not get it delivered (issue 14).
            raise LimitExceeded(f"part {part.index}: odd body of {end - start} bytes, over "
                                f"the {ALT_MAX} bytes its lenient readings may take")
        raw = lines.read_raw(start, end)
        seen = {_digest_file(part.path)} if part.path else set()
        for data in enclosed.every_reading(raw, encodings):
            digest = hashlib.md5(data).digest()
            if digest not in seen:
                seen.add(digest)
                self.add_decoded(part, data, "alternate")

    def carve(self, lines: Lines) -> None:
        """Base64 runs anywhere in the raw message, whatever its structure says."""
        size = lines.offset
        if size > CARVE_ALWAYS and not self.result.defects:
            return
        if size > CARVE_MAX:  # ambiguous, and too large to carve: never passed (issue 14)
            raise LimitExceeded(f"odd message of {size} bytes, over the {CARVE_MAX} bytes "
                                "base64 carving may take")
        runs = base64_runs(lines.read_raw(0, size), self.plain_base64)
        if not runs:
            return
        seen = {_digest_file(p.path) for p in self.result.parts if p.path is not None}
        holder = Part(-1, 0, "application/octet-stream", "carved")
        for run in runs:
            for reading in (readings.b64_skip_junk, readings.b64_restart_at_pad):
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
                self.entity(Lines(inner), [], part.depth + 1, "text/plain")
            return
        head = part.head
        if len(head) < min(part.size, TEXT_SNIFF):
            with open(part.path, "rb") as handle:
                head = handle.read(TEXT_SNIFF)
        # Clients decode uuencode, yEnc and BinHex found in text bodies.
        whole = part.size <= len(head)
        text = part.content_type.startswith("text/")
        markers = enclosed.markers(part.path) if text and not whole else enclosed.enclosed(head)
        if b"begin" in markers:
            self.uudecode(part)
        if part.size <= ALT_MAX and markers & {b"=ybegin", b"(This file must be converted"}:
            body = part.path.read_bytes()
            for decoded in (readings.ydecode(body), readings.binhex_decode(body)):
                if decoded:
                    self.add_decoded(part, decoded, "alternate")
        self.open_members(part, head)

    def uudecode(self, part: Part) -> None:
        """Files uuencoded inside a text body ('begin MODE NAME' ... 'end')."""
        assert part.path is not None
        with open(part.path, "rb") as handle:
            current: Body | None = None
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
                        current = Body(self.new_file(current_part), encoding, self.charge)
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


def _member_names(parent: str, found: list[str]) -> list[str]:
    """A member's names: its path under the container's, as stored, and bare."""
    found = [name for name in found if name.strip("./")]  # "." is the image's root
    full = [f"{parent}/{name.lstrip('/')}" for name in found]
    bare = [name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] for name in found]
    return list(dict.fromkeys(n for n in (*full, *found, *bare) if n))


def _digest_file(path: Path | None) -> bytes:
    digest = hashlib.md5()
    if path is not None:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.digest()


def explode(source: BinaryIO, workdir: Path, limits: Limits) -> Explosion:
    """Walk a message, decoding every leaf into workdir; raise LimitExceeded past limits."""
    return Walker(workdir, limits).walk(source)
