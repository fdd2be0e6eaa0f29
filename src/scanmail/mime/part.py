"""What a walk produces: parts (entities and members), the limits, the whole result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    origin: str  # mime | alternate | carved | uuencode | a container kind (zip, 7z, ...)
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
    encrypted: list[str] = field(default_factory=list)  # members no one can read unlocked
    # Stretches of the raw message (offsets from its start) that a written part holds
    # decoded exactly: the well-formed base64 bodies of binary parts, past their first
    # line, of a message read without a defect (mime.cuts). The scanner may leave
    # them out of the raw message it scans.
    cuts: list[tuple[int, int]] = field(default_factory=list)

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
