"""The signature database directory: its files, a snapshot of them, their ages and staleness."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scanmail.config import Config
from scanmail.sigupdate.canary import CANARY_FILE

log = logging.getLogger(__name__)

TOOL_TIMEOUT = 300.0  # a ClamAV tool loading one file (large .ldb/.yara sets take a while)
OFFICIAL_EXTENSIONS = frozenset({"cvd", "cld", "cud"})
# Text formats ClamAV loads from a database directory and that third parties publish
# (signed .cvd/.cld and bytecode .cbc are freshclam's business).
SOURCE_EXTENSIONS = frozenset({
    "hdb", "hdu", "hsb", "hsu", "mdb", "mdu", "msb", "msu", "imp", "ndb", "ndu", "ldb",
    "ldu", "cdb", "idb", "ftm", "fp", "sfp", "ign", "ign2", "pdb", "gdb", "wdb", "yar", "yara",
})
DATABASE_EXTENSIONS = SOURCE_EXTENSIONS | OFFICIAL_EXTENSIONS | {"cbc", "crb", "cat", "pwdb"}


def extension(name: str) -> str:
    """A file name's extension in lower case; empty if it has none."""
    return name.rpartition(".")[2].lower() if "." in name else ""


@dataclass(frozen=True)
class FileAge:
    """One database file and when its signatures were made."""

    name: str
    made: float
    origin: str  # "build time" (sigtool --info of a .cvd/.cld) or "file time" (mtime)
    version: str = ""

    def line(self, now: float) -> str:
        when = datetime.fromtimestamp(self.made, UTC).strftime("%Y-%m-%d %H:%M UTC")
        version = f" version {self.version}," if self.version else ""
        return f"{self.name}:{version} {self.origin} {when}, {days(now - self.made)} old"


def days(seconds: float) -> str:
    """Seconds as days, for a line of text."""
    return f"{seconds / 86400:.1f} days"


def database_files(db_dir: Path) -> list[Path]:
    """The files clamd loads from the directory, without our canary."""
    try:
        entries = sorted(db_dir.iterdir())
    except OSError:
        return []
    return [
        path for path in entries
        if extension(path.name) in DATABASE_EXTENSIONS and not path.name.startswith(".")
        and path.name != CANARY_FILE and path.is_file()
    ]


def snapshot(db_dir: Path) -> frozenset[tuple[str, int, int]]:
    """Name, size and mtime of every database file: a change means clamd needs a reload."""
    found = set()
    for path in database_files(db_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        found.add((path.name, st.st_size, st.st_mtime_ns))
    return frozenset(found)


def build_time(path: Path) -> FileAge | None:
    """A .cvd/.cld's build time and version from `sigtool --info`; None if it has none."""
    try:
        done = subprocess.run(
            ["sigtool", f"--info={path}"], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=TOOL_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    built = re.search(r"^Build time: (.+)$", done.stdout, re.MULTILINE)
    version = re.search(r"^Version: (\S+)", done.stdout, re.MULTILINE)
    try:
        made = datetime.strptime(built.group(1).strip(), "%d %b %Y %H:%M %z") if built else None
    except ValueError:
        made = None
    if made is None:
        log.warning("%s: sigtool --info shows no build time", path)
        return None
    return FileAge(path.name, made.timestamp(), "build time", version.group(1) if version else "")


def file_ages(db_dir: Path) -> list[FileAge]:
    """Official databases by build time; without any, hand-made files by modification time."""
    files = database_files(db_dir)
    official = [path for path in files if extension(path.name) in OFFICIAL_EXTENSIONS]
    if official:
        return [age for path in official if (age := build_time(path)) is not None]
    return [FileAge(path.name, path.stat().st_mtime, "file time") for path in files]


@dataclass(frozen=True)
class Freshness:
    """The age of the newest signatures against SIG_MAX_AGE_DAYS."""

    directory: Path
    files: tuple[FileAge, ...]
    limit_days: float
    now: float = field(default_factory=time.time)

    @property
    def newest(self) -> FileAge | None:
        return max(self.files, key=lambda age: age.made, default=None)

    @property
    def is_stale(self) -> bool:
        newest = self.newest
        return newest is None or self.now - newest.made > self.limit_days * 86400

    def summary(self) -> str:
        newest = self.newest
        if newest is None:
            return f"no dated signature database in {self.directory}"
        state = "stale" if self.is_stale else "fresh"
        return (
            f"signatures {state}: newest {days(self.now - newest.made)} old"
            f" ({newest.origin} of {newest.name}), limit {self.limit_days:g} days"
        )


def freshness(config: Config) -> Freshness:
    """How old the signatures in SIG_DB_DIR are."""
    db_dir = config.sig_db_dir
    return Freshness(db_dir, tuple(file_ages(db_dir)), config.sig_max_age_days)
