"""clamd's effective size limits, read from the clamd.conf it runs with.

clamd keeps the FIRST value of a repeated directive and ignores the rest without a word,
so a `StreamMaxLength 64M` appended to Debian's clamd.conf (which already says 25M) does
nothing. We read the file the same way and warn when a limit is below MAX_MESSAGE_SIZE (only
when that file's LocalSocket or TCPSocket is CLAMD_SOCKET: another clamd's file says
nothing about ours):
such mail is quarantined as `unchecked`, never passed unscanned, but the admin should know
why before the first 30 MB message arrives.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from scanmail.config import Config
from scanmail.humanize import size

# clamd's own defaults (clamd.conf(5), ClamAV 1.x) for a directive the file does not set.
DEFAULTS = {"StreamMaxLength": 100 << 20, "MaxFileSize": 100 << 20, "MaxScanSize": 400 << 20}
_SIZE = re.compile(r"(\d+)\s*([kKmMgG]?)[bB]?")
_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_CONF_BYTES = 1 << 20


@dataclass(frozen=True)
class Limit:
    """One size directive: its value in bytes and where it was set (line 0: clamd default)."""

    name: str
    value: int
    line: int


def parse_size(text: str) -> int | None:
    """clamd's size syntax: 25M, 512K, 1G, or plain bytes; None if not a size."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT[match.group(2).lower()]


def directives(path: Path) -> dict[str, tuple[str, int]]:
    """Each directive's first value and line, as clamd reads its file."""
    with path.open("rb") as conf:
        return parse_directives(conf.read(MAX_CONF_BYTES).decode("utf-8", "replace"))


def parse_directives(text: str) -> dict[str, tuple[str, int]]:
    """directives() of a clamd.conf's text (setup edits the line clamd would read)."""
    found: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            found.setdefault(words[0], (words[1].split("#", 1)[0].strip(), number))
    return found


def read_limits(path: Path) -> dict[str, Limit]:
    """The size limits clamd would use with this file: the first value of each wins."""
    found = directives(path)
    limits: dict[str, Limit] = {}
    for name, default in DEFAULTS.items():
        value, number = found.get(name, ("", 0))
        parsed = parse_size(value) if number else None
        limits[name] = Limit(name, parsed, number) if parsed is not None else \
            Limit(name, default, 0)
    return limits


def serves(path: Path, clamd_socket: str) -> bool:
    """Whether the clamd configured by path listens where CLAMD_SOCKET points."""
    found = directives(path)
    if clamd_socket.startswith("tcp://"):
        port = clamd_socket.rsplit(":", 1)[-1].strip("/")
        return found.get("TCPSocket", ("", 0))[0] == port
    local = found.get("LocalSocket", ("", 0))[0]
    return bool(local) and os.path.realpath(local) == os.path.realpath(clamd_socket)


def handover_max(config: Config, ceiling: int) -> int:
    """The largest object to hand clamd as a descriptor: ceiling, or less where CLAMD_CONF
    (when it is our clamd's file) sets StreamMaxLength or MaxFileSize lower, so that what
    INSTREAM would have refused (unchecked) is still refused, never skipped in silence."""
    if not config.clamd_conf:
        return ceiling
    path = Path(config.clamd_conf)
    try:
        if not serves(path, config.clamd_socket):
            return ceiling
        limits = read_limits(path)
    except OSError:
        return ceiling
    return min(ceiling, limits["StreamMaxLength"].value, limits["MaxFileSize"].value)


def warnings(config: Config) -> list[str]:
    """One line per clamd limit below MAX_MESSAGE_SIZE (none if CLAMD_CONF is empty or absent).

    StreamMaxLength below it means such mail is refused by clamd (quarantined unchecked);
    MaxFileSize/MaxScanSize below it mean clamd skips the rest of a large file (unless
    AlertExceedsMax yes reports it).
    """
    if config.scanner != "clamd" or not config.clamd_conf:
        return []
    path = Path(config.clamd_conf)
    try:
        if not serves(path, config.clamd_socket):
            return []  # another clamd's file: its limits say nothing about ours
        limits = read_limits(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{path}: cannot read clamd's limits: {exc.strerror}"]
    out = []
    for limit in limits.values():
        if limit.value >= config.max_message_size:
            continue
        where = f"{path} line {limit.line}" if limit.line else f"clamd's default, {path}"
        effect = ("mail larger than that is quarantined as unchecked"
                  if limit.name == "StreamMaxLength" else "clamd scans only part of larger mail")
        out.append(
            f"clamd {limit.name} is {size(limit.value)} ({where}), below MAX_MESSAGE_SIZE "
            f"{size(config.max_message_size)}: {effect}; edit that line (clamd keeps the "
            f"first value of a setting, an appended one does nothing) and restart clamd"
        )
    return out
