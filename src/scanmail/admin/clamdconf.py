"""clamd.conf's size limits raised in place to fit MAX_MESSAGE_SIZE (`scanmail setup`).

clamd keeps the FIRST value of a directive and ignores a repeated one without a word
(clamd_limits reads it the same way), so an appended `StreamMaxLength 64M` after Debian's
`StreamMaxLength 25M` does nothing. So the line clamd reads is the one edited; a directive
is added only when no line sets it. A limit already large enough is left as the admin
set it: setup only ever raises them. The original file is kept once, beside it, as
clamd.conf.scanmail-bak, and every write is atomic.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scanmail.admin.step import Step, done, note
from scanmail.clamd_limits import parse_directives, parse_size
from scanmail.durable import write_file
from scanmail.errors import SetupError
from scanmail.humanize import size

BACKUP_SUFFIX = ".scanmail-bak"
CLAMD_MAX_MB = 4095  # clamd refuses a size limit of 4 GB or more
_YES = ("yes", "true", "1")


def wanted(max_message_size: int) -> dict[str, str]:
    """The limits for mail up to max_message_size: the README's 64M/64M/256M for 50M.

    A quarter more than the largest message (the trace headers the gateway adds), rounded
    up to a power of two megabytes so the numbers look chosen; MaxScanSize four times
    that, for what an archive inside a message unpacks to.
    """
    megabytes = -(-(max_message_size + max_message_size // 4) // (1 << 20))
    stream = min(1 << (megabytes - 1).bit_length(), CLAMD_MAX_MB)
    return {"StreamMaxLength": f"{stream}M", "MaxFileSize": f"{stream}M",
            "MaxScanSize": f"{min(4 * stream, CLAMD_MAX_MB)}M", "AlertExceedsMax": "yes"}


def is_enough(name: str, current: str, target: str) -> bool:
    """Whether clamd's current value of a directive already meets the target."""
    if name == "AlertExceedsMax":
        return current.lower() in _YES
    have, need = parse_size(current), parse_size(target)
    return have is not None and need is not None and have >= need


def raise_limits(text: str, limits: dict[str, str]) -> tuple[str, list[str]]:
    """text with each limit at least as asked; the new text and one phrase per change."""
    lines = text.splitlines(keepends=True)
    found = parse_directives(text)
    changes: list[str] = []
    for name, target in limits.items():
        if name not in found:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(f"{name} {target}\n")
            changes.append(f"{name} {target} added")
            continue
        current, number = found[name]
        if is_enough(name, current, target):
            continue
        old = lines[number - 1]
        ending = old[len(old.rstrip("\r\n")):] or "\n"
        lines[number - 1] = f"{name} {target}{ending}"
        changes.append(f"{name} {current or '(empty)'} -> {target} (line {number})")
    return "".join(lines), changes


def settle(path: Path, max_message_size: int, required: bool) -> Step:
    """The clamd.conf at path edited so its limits fit; required: a missing file is an error.

    The Step says whether clamd must be restarted (changed) to read the new limits.
    """
    real = path.resolve()
    try:
        info = real.stat()
        original = real.read_bytes()
    except FileNotFoundError:
        if required:
            raise SetupError(f"--clamd-conf {path}: no such file") from None
        return note(f"{path}: not there (no clamav-daemon?); clamd's limits left alone")
    except OSError as exc:
        raise SetupError(f"{path}: cannot read: {exc.strerror}") from None
    limits = wanted(max_message_size)
    text, changes = raise_limits(original.decode("utf-8", "surrogateescape"), limits)
    if not changes:
        summary = ", ".join(f"{name} {value}" for name, value in found_values(text, limits))
        return note(f"{path}: clamd's limits already fit MAX_MESSAGE_SIZE "
                    f"{size(max_message_size)} ({summary})")
    mode = stat.S_IMODE(info.st_mode)
    backup = real.with_name(real.name + BACKUP_SUFFIX)
    kept = ""
    if not backup.exists():
        write_file(backup, original, mode)
        kept = f"; the original kept as {backup}"
    write_file(real, text.encode("utf-8", "surrogateescape"), mode)
    if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
        os.chown(real, info.st_uid, info.st_gid)
    return done(f"{path}: {', '.join(changes)}{kept}; clamd must be restarted to use them")


def found_values(text: str, limits: dict[str, str]) -> list[tuple[str, str]]:
    """Each limit's value as clamd reads it from text."""
    found = parse_directives(text)
    return [(name, found[name][0]) for name in limits if name in found]
