"""The canary: a signature of our own whose detection proves which database clamd runs."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from scanmail import durable

CANARY_FILE = "scanmail-canary.hsb"
CANARY_PREFIX = "Scanmail.Canary."


@dataclass(frozen=True)
class Canary:
    """A signature of our own, rewritten at each reload; clamd detecting it proves the reload.

    With only hand-made databases VERSION shows no database version at all, and a .cvd's
    date does not change when an extra file does, so VERSION alone cannot confirm a reload.
    """

    tag: str

    @property
    def sample(self) -> bytes:
        return f"scanmail sigupdate canary {self.tag}\n".encode("ascii")

    @property
    def name(self) -> str:
        return CANARY_PREFIX + self.tag

    def line(self) -> str:
        digest = hashlib.sha256(self.sample).hexdigest()
        return f"{digest}:{len(self.sample)}:{self.name}\n"


def read_canary(db_dir: Path) -> Canary | None:
    """The canary now in the database directory, if there is a well-formed one."""
    try:
        text = (db_dir / CANARY_FILE).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(re.escape(CANARY_PREFIX) + r"([0-9a-f]{16})$", text.strip())
    canary = Canary(match.group(1)) if match else None
    return canary if canary is not None and canary.line() == text else None


def write_canary(db_dir: Path) -> Canary:
    """Put a new canary into the database directory, atomically."""
    canary = Canary(secrets.token_hex(8))
    write_atomically(db_dir / CANARY_FILE, canary.line().encode("ascii"))
    return canary


def write_atomically(target: Path, data: bytes) -> None:
    """Write a small file under a name ClamAV ignores, readable by clamd's own user."""
    durable.write_file(target, data, 0o644, partial=target.with_name(f".{target.name}.partial"))
